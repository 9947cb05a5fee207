"""NEWS2 (RCP 2017): every band boundary of every parameter, both SpO2 scales, the risk
thresholds and the refusal of impossible input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.news2 import PARAMETERS, RESPONSES, News2Error, news2

NONE: dict[str, Any] = dict(resp_rate=None, spo2=None, spo2_scale=1, on_oxygen=None,
                            systolic_bp=None, pulse=None, consciousness=None, temperature=None)
NORMAL: dict[str, Any] = dict(resp_rate=16, spo2=97, spo2_scale=1, on_oxygen=False,
                              systolic_bp=120, pulse=70, consciousness="A", temperature=37.0)


def only(**given: Any) -> dict[str, int]:
    return dict(news2(**{**NONE, **given}).scores)


@pytest.mark.parametrize(("rate", "score"), [
    (0, 3), (8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3), (99, 3)])
def test_respiration_rate_bands(rate: int, score: int) -> None:
    assert only(resp_rate=rate) == {"resp_rate": score}


@pytest.mark.parametrize(("spo2", "score"), [
    (0, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)])
@pytest.mark.parametrize("on_oxygen", [False, True])
def test_spo2_scale_1_bands_whatever_the_oxygen(spo2: int, score: int, on_oxygen: bool) -> None:
    assert only(spo2=spo2, on_oxygen=on_oxygen)["spo2"] == score


@pytest.mark.parametrize(("spo2", "on_oxygen", "score"), [
    (0, False, 3), (83, False, 3), (84, False, 2), (85, False, 2), (86, False, 1),
    (87, False, 1), (88, False, 0), (92, False, 0), (93, False, 0), (100, False, 0),
    (83, True, 3), (84, True, 2), (86, True, 1), (88, True, 0), (92, True, 0),
    (93, True, 1), (94, True, 1), (95, True, 2), (96, True, 2), (97, True, 3), (100, True, 3)])
def test_spo2_scale_2_bands_on_air_and_on_oxygen(spo2: int, on_oxygen: bool, score: int) -> None:
    assert only(spo2=spo2, spo2_scale=2, on_oxygen=on_oxygen)["spo2"] == score


def test_spo2_scale_2_high_saturation_with_oxygen_unknown_scores_as_air() -> None:
    result = news2(**{**NONE, "spo2": 98, "spo2_scale": 2})
    assert result.scores == {"spo2": 0}
    assert "air_or_oxygen" in result.missing


@pytest.mark.parametrize(("on_oxygen", "score"), [(False, 0), (True, 2)])
def test_air_or_oxygen(on_oxygen: bool, score: int) -> None:
    assert only(on_oxygen=on_oxygen) == {"air_or_oxygen": score}


@pytest.mark.parametrize(("sbp", "score"), [
    (0, 3), (90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3), (300, 3)])
def test_systolic_bp_bands(sbp: int, score: int) -> None:
    assert only(systolic_bp=sbp) == {"systolic_bp": score}


@pytest.mark.parametrize(("pulse", "score"), [
    (0, 3), (40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2),
    (130, 2), (131, 3), (300, 3)])
def test_pulse_bands(pulse: int, score: int) -> None:
    assert only(pulse=pulse) == {"pulse": score}


@pytest.mark.parametrize(("level", "score"), [("A", 0), ("C", 3), ("V", 3), ("P", 3), ("U", 3)])
def test_consciousness(level: str, score: int) -> None:
    assert only(consciousness=level) == {"consciousness": score}


@pytest.mark.parametrize(("temp", "score"), [
    (25.0, 3), (35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1), (39.0, 1),
    (39.1, 2), (45.0, 2)])
def test_temperature_bands(temp: float, score: int) -> None:
    assert only(temperature=temp) == {"temperature": score}


@pytest.mark.parametrize(("given", "score"), [
    (dict(temperature=35.05), 1), (dict(temperature=38.05), 1), (dict(resp_rate=11.5), 0),
    (dict(pulse=90.5), 1), (dict(systolic_bp=219.5), 3)])
def test_values_between_printed_bands_take_the_band_above(given: dict[str, float], score: int) -> None:
    assert list(only(**given).values()) == [score]


def test_a_normal_patient_scores_zero_routine_monitoring() -> None:
    result = news2(**NORMAL)
    assert result.total == 0 and result.risk == "low" and result.complete
    assert result.response == RESPONSES["routine"]
    assert list(result.scores) == list(PARAMETERS)


def scored(**changes: Any) -> tuple[int, str]:
    result = news2(**{**NORMAL, **changes})
    return result.total, result.risk


def test_risk_thresholds() -> None:
    assert scored(pulse=95) == (1, "low")
    assert scored(resp_rate=22, pulse=115) == (4, "low")
    assert scored(resp_rate=7) == (3, "low-medium")  # a single 3
    assert scored(resp_rate=7, pulse=95) == (4, "low-medium")
    assert scored(resp_rate=22, pulse=115, temperature=38.5) == (5, "medium")
    assert scored(resp_rate=7, pulse=115) == (5, "medium")  # 5 outranks the single 3
    assert scored(resp_rate=22, pulse=115, on_oxygen=True) == (6, "medium")
    assert scored(resp_rate=22, pulse=115, on_oxygen=True, temperature=38.5) == (7, "high")
    assert scored(resp_rate=30, spo2=85, on_oxygen=True, systolic_bp=80, pulse=140,
                  consciousness="U", temperature=34.0) == (20, "high")


def test_responses_follow_the_risk() -> None:
    assert news2(**{**NORMAL, "pulse": 95}).response == RESPONSES["low"]
    assert news2(**{**NORMAL, "consciousness": "C"}).response == RESPONSES["low-medium"]
    assert news2(**{**NORMAL, "resp_rate": 22, "pulse": 115, "temperature": 38.5}).response \
        == RESPONSES["medium"]
    assert news2(**{**NORMAL, "resp_rate": 30, "pulse": 140, "on_oxygen": True}).response \
        == RESPONSES["high"]


def test_missing_parameters_score_nothing_and_are_named() -> None:
    result = news2(**{**NORMAL, "systolic_bp": None, "temperature": None, "pulse": 120})
    assert result.total == 2
    assert result.missing == ("systolic_bp", "temperature")
    assert not result.complete
    assert "systolic_bp" not in result.scores
    nothing = news2(**NONE)
    assert nothing.total == 0 and nothing.missing == PARAMETERS and nothing.scores == {}


@pytest.mark.parametrize("bad", [
    dict(resp_rate=-1), dict(resp_rate=100), dict(spo2=101), dict(spo2=-0.5),
    dict(systolic_bp=301), dict(pulse=-3), dict(temperature=24.9), dict(temperature=45.1),
    dict(temperature=float("nan")), dict(pulse=float("inf")), dict(pulse="72"),
    dict(resp_rate=True), dict(spo2_scale=3), dict(spo2_scale=0), dict(consciousness="X"),
    dict(consciousness="a"), dict(on_oxygen=1)])
def test_impossible_input_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(News2Error):
        news2(**{**NORMAL, **bad})


def test_news2_error_is_a_value_error() -> None:
    assert issubclass(News2Error, ValueError)


def test_the_result_is_frozen() -> None:
    result = news2(**NORMAL)
    with pytest.raises(AttributeError):
        result.total = 3  # type: ignore[misc]


@given(st.integers(0, 99), st.integers(0, 100), st.sampled_from([1, 2]), st.booleans(),
       st.integers(0, 300), st.integers(0, 300), st.sampled_from("ACVPU"),
       st.integers(250, 450).map(lambda t: t / 10))
def test_total_is_the_sum_and_the_risk_follows_it(rr: int, spo2: int, scale: int, o2: bool,
                                                  sbp: int, hr: int, avpu: str, temp: float) -> None:
    result = news2(rr, spo2, scale, o2, sbp, hr, avpu, temp)
    assert result.total == sum(result.scores.values())
    assert all(0 <= s <= 3 for s in result.scores.values())
    if result.total >= 7:
        assert result.risk == "high"
    elif result.total >= 5:
        assert result.risk == "medium"
    elif 3 in result.scores.values():
        assert result.risk == "low-medium"
    else:
        assert result.risk == "low"
