"""hear-matpac: the HEAR 2021 embedding plugin for MATPAC."""
import re
from pathlib import Path

from setuptools import find_packages, setup

# The version has one home, hear_matpac/version.py (read as text: importing the package needs torch).
VERSION = re.search(r'__version__ = "([^"]+)"', Path(__file__).with_name("hear_matpac").joinpath("version.py").read_text()).group(1)

setup(
    name="hear-matpac",
    version=VERSION,
    description="HEAR-compatible embeddings from MATPAC / MATPAC++ audio foundation models",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["hear_matpac", "hear_matpac.*"]),
    package_data={"hear_matpac": ["assets/*.pt", "assets/*.md", "hear_tools/*.txt"]},
    # No upper cap on torch: the front end is torch.stft + a filterbank built here, so any
    # torch from the oldest tested (2.4) on works; tools/torch_matrix.py checks a release.
    # torchaudio is no dependency: tests and benchmarks use it as a cross-check where it imports.
    # soxr resamples files that are not at 16 kHz (constraints-hear.txt pins the same package).
    install_requires=[
        "torch>=2.4",
        "numpy",
        "soundfile",
        "soxr>=0.3",
        "tqdm",
        "safetensors>=0.4",
    ],
    extras_require={
        "compare": ["matplotlib"],  # the PNG chart of `hear-matpac compare`
        "slurm": ["submitit"],  # `evaluate --engine slurm`: one Slurm job per stage (docs/scale-out.md)
        "test": ["pytest", "matplotlib", "submitit"],
    },
    entry_points={"console_scripts": ["hear-matpac=hear_matpac.cli:main"]},
)
