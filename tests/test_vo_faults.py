"""TAP faults injected by a loopback proxy in front of the real local DaCHS server.

No partial result may come back as if complete; errors name the service and
the query; transient faults are retried and then succeed.
"""

import pytest

from stellar_ml_ages.exceptions import TAPServiceError, TAPTimeoutError
from stellar_ml_ages.vo import conf, run_query

from .tap_proxy import FaultyTAPProxy

QUERY = "SELECT TOP 300 source_id, RAJ2000, DEJ2000 FROM smatest.ddpayne ORDER BY source_id"


@pytest.fixture
def fast_retries():
    with conf.set_temp("retry_backoff", 0.05), conf.set_temp("max_retries", 3):
        yield


@pytest.fixture(scope="module")
def expected(tap_url):
    table = run_query(tap_url, QUERY)
    assert len(table) == 300
    return table


@pytest.mark.parametrize("faults", [["503", "ok"], ["500", "503", "ok"], ["truncate", "ok"],
                                    ["drop", "ok"]])
def test_transient_faults_are_retried_then_complete(tap_url, expected, fast_retries, faults):
    with FaultyTAPProxy(tap_url, faults) as proxy:
        table = run_query(proxy.url, QUERY)
    assert proxy.seen == faults
    assert table.meta["TRUNCATED"] is False
    assert list(table["source_id"]) == list(expected["source_id"])


@pytest.mark.parametrize("fault", ["503", "truncate", "drop"])
def test_persistent_faults_give_up_naming_service_and_query(tap_url, fast_retries, fault):
    with FaultyTAPProxy(tap_url, [fault] * 10) as proxy:
        with pytest.raises(TAPServiceError) as info:
            run_query(proxy.url, QUERY)
    assert len(proxy.seen) == 4  # the first attempt and three retries, no more
    assert info.value.service == proxy.url and info.value.query == QUERY
    assert proxy.url in str(info.value) and "after 4 attempts" in str(info.value)


def test_a_slow_answer_times_out_clearly(tap_url, fast_retries):
    with conf.set_temp("timeout", 0.5), conf.set_temp("max_retries", 1):
        with FaultyTAPProxy(tap_url, ["slow", "slow"], delay=2.0) as proxy:
            with pytest.raises(TAPTimeoutError) as info:
                run_query(proxy.url, QUERY)
    assert info.value.service == proxy.url
    assert "0.5" in str(info.value) or "timed out" in str(info.value)
