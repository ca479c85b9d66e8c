"""Package layout: the flowctl package plus the top-level configs/ shipped as flowctl.configs."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["flowctl", "flowctl.*"]) + ["flowctl.configs"],
    package_dir={"flowctl.configs": "configs"},
    package_data={"flowctl.configs": ["*.yaml", "**/*.yaml"],
                  "flowctl.calo": ["binning/*.xml"]},
    include_package_data=False,
)
