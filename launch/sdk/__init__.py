"""Which SageMaker Python SDK talks to AWS: ``launch.sdk=auto|v2|v3``.

The launcher describes what it wants in SDK-neutral terms (``launch.job``); ``launch.sdk.v2`` and
``launch.sdk.v3`` are the two thin adapters that turn those descriptions into SDK calls. Both SDKs install
as the distribution ``sagemaker``, so one environment holds one of them: ``auto`` takes that one.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType

from dogbreed.config import ConfigError

# launch.sdk value -> (what to install, the extra of this project that installs it).
REQUIREMENTS = {"v2": ("sagemaker>=2.257.7,<3", "sagemaker"), "v3": ("sagemaker>=3.9,<4", "sagemaker-v3")}


def installed() -> str | None:
    """``v2`` or ``v3`` for the installed ``sagemaker`` distribution (None when it is missing)."""
    try:
        version = importlib.metadata.version("sagemaker")
    except importlib.metadata.PackageNotFoundError:
        return None
    major = version.split(".", 1)[0]
    return f"v{major}" if f"v{major}" in REQUIREMENTS else None


def _install_hint(choice: str) -> str:
    spec, extra = REQUIREMENTS[choice]
    return f"pip install 'dogbreed[{extra}]' (that is {spec})"


def resolve(choice: str | None) -> str:
    """``launch.sdk`` → ``v2`` or ``v3``; a missing or mismatched SDK is a ConfigError naming the extra."""
    choice = str(choice or "auto")
    if choice not in ("auto", *REQUIREMENTS):
        raise ConfigError(f"launch.sdk={choice!r} must be auto, v2 or v3")
    found = installed()
    if choice == "auto":
        if found is None:
            raise ConfigError(
                "launch.sdk=auto: no SageMaker Python SDK is installed; "
                f"{_install_hint('v3')} or {_install_hint('v2')}"
            )
        return found
    if found != choice:
        have = f"sagemaker {importlib.metadata.version('sagemaker')}" if found else "no sagemaker"
        raise ConfigError(
            f"launch.sdk={choice} needs SageMaker Python SDK {choice} but this environment has {have}: "
            f"{_install_hint(choice)}, or set launch.sdk=auto"
        )
    return choice


def adapter(choice: str | None) -> ModuleType:
    """The adapter module (``launch.sdk.v2`` or ``launch.sdk.v3``) for ``launch.sdk``."""
    return importlib.import_module(f"launch.sdk.{resolve(choice)}")
