"""Shared helpers of the checks modules (grader.checks)."""

from __future__ import annotations

import math

import pytest

from grader.checks import model_settings, relative_score


@pytest.mark.parametrize("student, expected", [
    (100.0, 1.0), (90.0, 1.0), (105.0, 1.0),  # better than or within 5 % of the reference
    (115.0, 0.5), (125.0, 0.0), (300.0, 0.0),  # linear from 5 % to 25 % worse
    (math.nan, 0.0), (math.inf, 0.0), (None, 0.0),
])
def test_relative_score_full_within_full_zero_from_zero_linear_between(student, expected):
    assert relative_score(student, 100.0, 0.05, 0.25) == pytest.approx(expected)


def test_relative_score_uses_the_size_of_a_negative_reference():
    assert relative_score(-90.0, -100.0, 0.05, 0.25) == pytest.approx(0.75)  # 10 % worse (higher) than -100


class _Rubric:
    path = "rubrics/x.toml"

    def __init__(self, model):
        self.model = model


class _Session:
    def __init__(self, data=None, overrides=None):
        self.data, self.model_overrides = data, overrides or {}


def test_model_settings_layers_rubric_then_overrides_then_data_and_rejects_typos():
    defaults = {"data": "digits", "epochs": 10, "lr": 1e-3}
    got = model_settings(_Rubric({"epochs": 20}), _Session("mnist:/m", {"lr": 0.01}), defaults)
    assert got == {"data": "mnist:/m", "epochs": 20, "lr": 0.01}
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epohcs'\]"):
        model_settings(_Rubric({"epohcs": 20}), None, defaults)
