"""Packaging that pyproject.toml cannot say: rubrics/ and templates/ stay at the top of the checkout and go
into the wheel inside the package, as grader/rubrics and grader/templates (grader.resources finds them in
both places), so that `pip install 'gradekit[dask]'` alone makes a working Dask worker."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["grader", "grader.*", "reference", "reference.*"])
    + ["grader.rubrics", "grader.templates"],
    package_dir={"grader.rubrics": "rubrics", "grader.templates": "templates"},
)
