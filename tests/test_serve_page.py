"""GET / in headless Chromium: pick a held-out photo with the file input, see its breed and the top-5 bars."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from serve.process import LocalServer

pytestmark = pytest.mark.browser


def api_answer(server: LocalServer, image: bytes) -> dict:
    request = urllib.request.Request(
        server.url + "/invocations", data=image, headers={"Content-Type": "image/jpeg"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def pretty(label: str) -> str:
    return label.split(".", 1)[-1].replace("_", " ")


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    model = Path(trained_run["output_dir"]) / "model" / "model.pt"
    with LocalServer(
        model,
        "--threads",
        "1",
        "--max-batch-size",
        "2",
        log_path=tmp_path_factory.mktemp("page") / "server.log",
    ) as s:
        yield s


def test_upload_a_photo_and_see_its_breed(server, synthetic_root, tmp_path):
    from browser import chrome, console_errors
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from dogbreed.predict import load_model

    predictor = load_model(Path(server.command[server.command.index("--model") + 1]))
    photos = sorted((synthetic_root / "test").glob("*/*.jpg"))
    photo = next(p for p in photos if predictor.predict(p)[0].label == p.parent.name)
    expected = pretty(photo.parent.name)

    with chrome() as driver:
        driver.get(server.url + "/")
        WebDriverWait(driver, 20).until(lambda d: "model ready" in d.find_element(By.ID, "status").text)
        assert "4 breeds" in driver.find_element(By.ID, "status").text
        driver.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.ID, "label").text not in ("", "Classifying…")
        )
        assert driver.find_element(By.ID, "label").text == expected
        rows = driver.find_elements(By.CSS_SELECTOR, "#results li")
        assert len(rows) == 4  # top-5 of a 4-class model
        assert rows[0].get_attribute("data-label") == photo.parent.name
        # What the page shows is the endpoint's own answer for this photo: labels, order, percentages.
        (answer,) = api_answer(server, photo.read_bytes())["predictions"]
        assert [r.get_attribute("data-label") for r in rows] == [t["label"] for t in answer["top_k"]]
        shown = [float(r.get_attribute("data-probability")) for r in rows]
        assert shown == [t["probability"] for t in answer["top_k"]]
        assert [r.find_element(By.CLASS_NAME, "pct").text for r in rows] == [f"{100 * p:.1f}%" for p in shown]
        assert driver.find_element(By.ID, "meta").text.startswith(f"{100 * answer['probability']:.1f}% sure")
        widths = [
            float(r.find_element(By.CLASS_NAME, "fill").value_of_css_property("width").removesuffix("px"))
            for r in rows
        ]
        assert widths == sorted(widths, reverse=True) and widths[0] > 0
        for width, p in zip(widths, shown, strict=True):  # bars are drawn to scale
            assert width / widths[0] == pytest.approx(max(0.005, p) / shown[0], abs=0.02)
        assert driver.find_element(By.ID, "error").text == ""
        driver.save_screenshot(str(tmp_path / "page.png"))
        assert not console_errors(driver)

        # A file that is not an image: the server's JSON error is shown, the page keeps working.
        bad = tmp_path / "notes.png"
        bad.write_text("not a picture")
        driver.find_element(By.ID, "file").send_keys(str(bad))
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "error").text)
        assert (
            "notes.png: body is not a JPEG, PNG, WebP, BMP, GIF, TIFF or PPM image"
            in driver.find_element(By.ID, "error").text
        )
