"""Anomaly scorers: range, causality, streaming == batch, and the shapes they must survive."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from autofix.data.scenarios import generate
from autofix.errors import InputError
from autofix.models.anomaly import OnsetScorer, RobustScorer, RollingZScore, make_scorer

SCORERS = [RobustScorer, OnsetScorer, RollingZScore]
STEP = pd.Timedelta("5min")
START = pd.Timestamp("2024-03-04")


def frame(values: np.ndarray, series_id: str = "s", start: pd.Timestamp = START) -> pd.DataFrame:
    ts = start + STEP * np.arange(len(values))
    return pd.DataFrame({"series_id": series_id, "ts": ts, "value": values})


def latency(days: float = 6.0, seed: int = 0, base: float = 0.04) -> np.ndarray:
    """Daily cycle (±35 %, like the generator) with multiplicative noise."""
    rng = np.random.default_rng(seed)
    n = int(days * 288)
    hours = np.arange(n) * 5 / 60
    seasonal = base * (1 + 0.35 * np.cos(2 * np.pi * (hours - 19) / 24))
    return seasonal * np.exp(rng.standard_normal(n) * 0.12)


def slowdown_case() -> pd.DataFrame:
    return generate("query_slowdown", seed=3, days=6).samples.rename(
        columns={"timestamp": "ts", "labels": "series_id"}
    )[["series_id", "ts", "value"]]


@pytest.mark.parametrize("cls", SCORERS)
def test_scores_are_in_unit_interval(cls: type[RobustScorer]) -> None:
    data = slowdown_case()
    rng = np.random.default_rng(1)
    wild = frame(rng.standard_cauchy(500) * 1e6, "wild")
    counter = frame(np.cumsum(rng.poisson(50, 500)).astype(float), "counter")
    zeros = frame(np.zeros(200), "zeros")
    scores = cls().fit_score(pd.concat([data, wild, counter, zeros], ignore_index=True))
    assert np.isfinite(scores).all()
    assert scores.min() >= 0.0
    assert scores.max() <= 1.0


@pytest.mark.parametrize("cls", SCORERS)
@settings(max_examples=15, deadline=None)
@given(cut=st.integers(min_value=1, max_value=1700), seed=st.integers(0, 3))
def test_appending_future_points_never_changes_past_scores(
    cls: type[RobustScorer], cut: int, seed: int
) -> None:
    data = slowdown_case()
    rng = np.random.default_rng(seed)
    data = data.sample(frac=1.0, random_state=rng).reset_index(drop=True)  # any row order
    past = data[data["ts"] < data["ts"].sort_values().iloc[cut]]
    model = cls().fit(past.iloc[:0])
    full = model.score_samples(data)
    np.testing.assert_array_equal(model.score_samples(past), full[past.index.to_numpy()])


@pytest.mark.parametrize("cls", SCORERS)
def test_streaming_equals_batch(cls: type[RobustScorer]) -> None:
    data = slowdown_case().sort_values("ts", kind="stable").reset_index(drop=True)
    batch = cls().fit_score(data)
    head, tail = data.iloc[:1000], data.iloc[1000:]
    model = cls().fit(head)
    np.testing.assert_array_equal(model.score_new(tail.iloc[:500]), batch[1000:1500])
    one_by_one = [
        model.update(row.series_id, row.ts, row.value) for row in tail.iloc[500:].itertuples()
    ]
    np.testing.assert_array_equal(np.array(one_by_one), batch[1500:])


def test_streaming_new_series_repeated_and_late_points() -> None:
    model = RobustScorer().fit(frame(latency(1), "old"))
    fresh = frame(latency(1, seed=5), "new")
    np.testing.assert_array_equal(model.score_new(fresh), RobustScorer().fit_score(fresh))
    last = fresh["ts"].iloc[-1]
    # A repeated or late time is one more observation now: scored, never refused, and
    # the series' clock does not go backwards.
    repeated = model.update("new", last, fresh["value"].iloc[-1])
    late = model.update("new", last - 10 * STEP, fresh["value"].iloc[-1])
    assert 0.0 <= repeated < 0.5
    assert 0.0 <= late < 0.5
    assert model.state_["last_t"][model.series_["new"]] == last.value / 1e9
    level = model.state_["level"].copy()
    assert np.isnan(model.update("new", last + STEP, float("nan")))
    np.testing.assert_array_equal(model.state_["level"], level)


@pytest.mark.parametrize("cls", SCORERS)
def test_every_row_is_scored_in_order_repeated_times_included(cls: type[RobustScorer]) -> None:
    data = frame(latency(1))
    # NAB-style: a DST change repeats an hour, a re-sent batch repeats two rows.
    dup = pd.concat([data.iloc[:150], data.iloc[138:150], data.iloc[150:]], ignore_index=True)
    dup = pd.concat([dup, dup.iloc[[60, 61]]], ignore_index=True)
    dup.loc[10, "value"] = np.nan
    scores = cls().fit_score(dup)
    assert np.isnan(scores[10])
    finite = np.delete(scores, 10)
    assert np.isfinite(finite).all()
    assert ((finite >= 0) & (finite <= 1)).all()
    assert finite[150:162].max() < 0.5  # the repeated hour is not an anomaly


def test_daily_seasonality_does_not_alarm() -> None:
    data = frame(latency(days=10))
    scores = RobustScorer().fit_score(data)
    threshold = RobustScorer.default_threshold
    assert scores[288:].max() < threshold  # after the first day
    assert (scores[288:] > 0.2).mean() < 0.01


def test_sustained_slowdown_scores_high() -> None:
    values = latency(days=4)
    at = 3 * 288 + 100
    values[at : at + 12] *= 4  # one hour, x4
    scores = RobustScorer().fit_score(frame(values))
    # Alarmed from the fourth point (two could still be a noise burst), then firmly.
    assert scores[at + 3 : at + 12].min() > RobustScorer.default_threshold
    assert scores[at + 8 : at + 12].min() > 0.85
    assert scores[:at].max() < RobustScorer.default_threshold


def test_single_spike_scores_lower_than_sustained_slowdown() -> None:
    values = latency(days=4)
    spike, slow = 3 * 288, 3 * 288 + 120
    values[spike] *= 10  # one point, ten times slower
    values[spike + 60 : spike + 62] *= 3  # two points
    values[slow : slow + 8] *= 3  # forty minutes, three times slower
    scores = RobustScorer().fit_score(frame(values))
    threshold = RobustScorer.default_threshold
    assert scores[spike : spike + 5].max() < threshold
    assert scores[spike + 60 : spike + 65].max() < threshold
    assert scores[slow + 4 : slow + 8].min() > threshold
    assert scores[slow : slow + 8].max() > 0.7
    # The baseline cannot tell them apart: the single spike is its top score.
    z = RollingZScore().fit_score(frame(values))
    assert z[spike] > 0.99


def test_level_shift_is_absorbed() -> None:
    values = latency(days=4)
    at = 2 * 288
    values[at:] *= 3  # a deploy makes the query permanently slower
    model = RobustScorer()
    scores = model.fit_score(frame(values))
    assert scores[at + 4 : at + 36].min() > 0.5  # alarms for a while ...
    settle = at + int(model.adapt_after / 300) + 12
    assert scores[settle:].max() < RobustScorer.default_threshold  # ... then accepts it


def test_gaps_do_not_alarm() -> None:
    values = latency(days=4)
    data = frame(values)
    data = data.drop(index=range(400, 472)).drop(index=range(700, 1000))  # 6 h and 25 h
    scores = RobustScorer().fit_score(data)
    assert scores[288:].max() < RobustScorer.default_threshold


def test_counters_are_scored_on_their_rate() -> None:
    rng = np.random.default_rng(0)
    n = 3 * 288
    rate = rng.poisson(300, n).astype(float)
    rate[700:712] *= 6  # an hour of six times the traffic
    counter = np.cumsum(rate)
    counter[300:] -= counter[299]  # a restart resets the counter
    counter[500:] -= counter[499]
    scores = RobustScorer().fit_score(frame(counter))
    assert scores[20:700].max() < RobustScorer.default_threshold
    assert scores[703:712].min() > RobustScorer.default_threshold
    assert scores[708:712].min() > 0.9


def test_clone_and_get_params() -> None:
    model = RobustScorer(warmup=30, direction="both")
    params = model.get_params()
    assert params["warmup"] == 30
    assert params["direction"] == "both"
    copy = clone(model)
    assert copy.get_params() == params
    with pytest.raises(NotFittedError):
        copy.score_samples(frame(latency(1)))
    assert clone(RollingZScore(window=50)).get_params()["window"] == 50


def test_bad_input_and_params() -> None:
    with pytest.raises(InputError, match="missing column 'value'"):
        RobustScorer().fit(pd.DataFrame({"series_id": [], "ts": []}))
    with pytest.raises(InputError, match="persistence"):
        RobustScorer(persistence=1.5).fit(frame(latency(1)))
    with pytest.raises(InputError, match="min_periods"):
        RollingZScore(window=5, min_periods=10).fit(frame(latency(1)))
    with pytest.raises(InputError, match="unknown model 'iforest'"):
        make_scorer("iforest")


def test_zscore_baseline_flags_a_three_sigma_point() -> None:
    rng = np.random.default_rng(0)
    values = 10 + rng.standard_normal(300)
    values[250] = 16
    scores = RollingZScore().fit_score(frame(values))
    assert scores[250] > 0.9
    assert np.median(scores[20:250]) < 0.05


def test_many_series_in_lockstep_match_one_by_one() -> None:
    rng = np.random.default_rng(2)
    parts = [frame(latency(1, seed=i)[: rng.integers(30, 288)], f"s{i}") for i in range(12)]
    together = RobustScorer().fit_score(pd.concat(parts, ignore_index=True))
    alone = np.concatenate([RobustScorer().fit_score(p) for p in parts])
    np.testing.assert_array_equal(together, alone)


def test_scorer_names_listed_without_importing_sklearn_match_the_registry() -> None:
    from autofix.models.anomaly import SCORERS
    from autofix.models.registry import SCORER_NAMES

    assert tuple(SCORERS) == SCORER_NAMES


def test_onset_scores_new_trouble_high_and_its_continuation_lower() -> None:
    values = latency(days=4)
    at = 3 * 288 + 100
    values[at : at + 24] *= 5  # two hours, five times slower
    scores = OnsetScorer().fit_score(frame(values))
    assert scores[at : at + 3].max() > 0.9  # news: it starts
    assert scores[at + 6 : at + 24].max() < scores[at : at + 3].max()  # then it is known
    # An ordinary day with its daily cycle is not news; a young series still sets a few
    # records in its noise's tail, so "rarely", not "never".
    assert (scores[2 * 288 : at] > 0.5).mean() < 0.01


def test_onset_sees_a_value_outside_the_range_both_ways() -> None:
    rng = np.random.default_rng(4)
    values = 50 + 5 * rng.standard_normal(3 * 288)
    values[700] = 5.0  # traffic collapsed for one sample: bad for a traffic series
    scores = OnsetScorer().fit_score(frame(values))
    assert scores[700] > 0.9
    assert OnsetScorer(direction="up").fit_score(frame(values))[700] < 0.5


def test_direction_for_metric() -> None:
    from autofix.models.anomaly import direction_for_metric

    assert direction_for_metric("probe_query_duration_seconds") == "up"
    assert direction_for_metric("pg_query_latency_seconds") == "up"
    assert direction_for_metric("http_requests_total") == "both"
    assert direction_for_metric("node_network_receive_bytes_total") == "both"
