"""hear-matpac: the HEAR 2021 embedding plugin for MATPAC."""
from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="hear-matpac",
    version="0.1.0",
    description="HEAR-compatible embeddings from MATPAC / MATPAC++ audio foundation models",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["hear_matpac", "hear_matpac.*"]),
    package_data={"hear_matpac": ["assets/*.pt", "assets/*.md", "hear_tools/*.txt"]},
    # torchaudio wheels do not declare which torch they were built for: keep both on one line.
    install_requires=[
        "torch>=2.4,<2.12",
        "torchaudio>=2.4,<2.12",
        "numpy",
        "soundfile",
        "tqdm",
        "safetensors>=0.4",
    ],
    extras_require={
        "compare": ["matplotlib"],  # the PNG chart of `hear-matpac compare`
        "test": ["pytest", "matplotlib"],
    },
    entry_points={"console_scripts": ["hear-matpac=hear_matpac.cli:main"]},
)
