"""load.smoke's totals: locust's per-endpoint JSON stats merged into one row."""

from load.smoke import totals


def _entry(requests: int, failures: int, times: dict[str, int], start: float, end: float) -> dict:
    return {
        "num_requests": requests,
        "num_failures": failures,
        "response_times": times,
        "start_time": start,
        "last_request_timestamp": end,
    }


def test_totals_merge_endpoints_before_taking_percentiles() -> None:
    rank = _entry(99, 0, {"10": 99}, 0.0, 4.0)
    events = _entry(1, 1, {"900": 1}, 1.0, 5.0)
    row = totals([rank, events])
    assert row["locust_requests"] == 100 and row["locust_failures"] == 1
    assert row["locust_rps"] == 20.0
    assert row["locust_p50_ms"] == 10.0 and row["locust_p95_ms"] == 10.0
    assert row["locust_p99_ms"] == 900.0
    assert totals([_entry(199, 0, {"10": 199}, 0.0, 4.0), events])["locust_p99_ms"] == 10.0


def test_a_run_with_no_requests_reads_zero_not_na() -> None:
    assert totals([]) == {
        "locust_requests": 0,
        "locust_failures": 0,
        "locust_rps": 0.0,
        "locust_p50_ms": 0.0,
        "locust_p95_ms": 0.0,
        "locust_p99_ms": 0.0,
    }
