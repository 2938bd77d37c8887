"""Package discovery lives here only because conf/ (top level, see README) ships as ``dogbreed.conf``."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["dogbreed*", "launch*", "serve*"]), "dogbreed.conf"],
    package_dir={"dogbreed.conf": "conf"},
)
