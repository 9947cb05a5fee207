"""What other parts may use of the processors."""

from __future__ import annotations

import processors


def test_news2_is_a_function_on_the_public_face() -> None:
    result = processors.news2(resp_rate=26, spo2=95, spo2_scale=1, on_oxygen=True, systolic_bp=105,
                              pulse=118, consciousness="A", temperature=38.4)
    assert result.total == 3 + 1 + 2 + 1 + 2 + 1
    assert result.risk == "high"


def test_exported_names_are_pinned() -> None:
    assert sorted(processors.__all__) == [
        "Alert", "AlertBook", "AlertState", "Emit", "Hopping", "News2", "News2Error", "PatientMonitor",
        "Query", "Session", "Severity", "Tumbling", "VehicleMonitor", "WindowEngine", "WindowResult",
        "news2", "sliding",
    ]
    for name in processors.__all__:
        assert getattr(processors, name) is not None
