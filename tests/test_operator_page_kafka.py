"""The operator page in a real headless browser (Debian's chromium and chromium-driver) on a worker on the broker.

Every value is read from the DOM after the page's script fetched ``status.json`` and rendered it: the HTML the
worker serves holds only placeholders, so a page whose script or endpoint is broken fails here.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from operator_screenshot import headless_chromium, wait_rendered
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from app.kafka.clients import Record, at_least, consume, produce
from app.serialization import dumps, loads
from tests.cases import transaction
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.kafka

WorkerFactory = Callable[..., WorkerProcess]
TRAINING_PAIRS = 300  # as in the worker's learning test, which sees the pattern's score rise by more than 0.3
THRESHOLD = 0.25


def _pattern(i: int, prefix: str) -> dict[str, object]:  # large amounts at night: the fraud pattern
    return transaction(i, tx_id=f"{prefix}-{i}", amount=900.0 + i % 50, timestamp="2018-04-02T03:00:00Z")


def _normal(i: int) -> dict[str, object]:
    return transaction(i, tx_id=f"normal-{i}", amount=20.0 + i % 40, timestamp="2018-04-02T14:00:00Z")


def _predictions(records: list[Record]) -> dict[str, dict[str, object]]:
    return {p["tx_id"]: p for p in (loads(r.value or b"") for r in records)}


def test_the_page_shows_status_model_throughput_dead_letter_codes_and_a_high_score_with_its_reasons(
    worker_factory: WorkerFactory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Any dead letter degrades this worker (a status and an issue the page must show); latency never does here.
    limits = {"DEGRADED_ERROR_RATE": "0.0001", "DEGRADED_P99_MS": "60000", "UNHEALTHY_P99_MS": "60000"}
    # Drift: every transaction sampled, the first 200 (the night pattern) the reference: the normal ones after move it.
    drift = {"DRIFT_SAMPLE_EVERY": "1", "DRIFT_REFERENCE_ROWS": "200", "DRIFT_WINDOW_ROWS": "200"}
    worker = worker_factory(partitions=1, DECISION_THRESHOLD=str(THRESHOLD), HEALTH_WINDOW_S="600", **limits, **drift)
    worker.wait_ready()
    topic = worker.topics["TRANSACTIONS_TOPIC"]
    training = [_pattern(i, "fraud") for i in range(TRAINING_PAIRS)] + [_normal(i) for i in range(TRAINING_PAIRS)]
    produce(kafka_bootstrap, topic, [(str(t["customer_id"]).encode(), dumps(t)) for t in training])
    labels = [(str(t["tx_id"]).encode(), dumps({"tx_id": t["tx_id"], "is_fraud": str(t["tx_id"]).startswith("fraud"),
                                                "timestamp": "2018-04-09T00:00:00Z"})) for t in training]  # fmt: skip
    produce(kafka_bootstrap, worker.topics["LABELS_TOPIC"], labels)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and loads(worker.http_get("/status.json"))["labels_learned"] < len(training):
        time.sleep(0.5)
    assert loads(worker.http_get("/status.json"))["labels_learned"] == len(training), worker.log_tail()

    # an analyst's rule the flagged probe matches: the page lists it with its hit
    rule = {"id": "night-big", "expression": "is_night == 1 and amount > 800", "action": "review"}
    request = urllib.request.Request(worker.web_url + "/rules", data=dumps(rule), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        version = loads(response.read())["version"]
    in_force_by = time.monotonic() + 10
    while time.monotonic() < in_force_by and loads(worker.http_get("/rules"))["version"] < version:
        time.sleep(0.2)
    probes = [(b"c-probe", dumps(_pattern(1, "after"))), (b"c-probe", dumps(_normal(999))), (b"c-bad", b"{not json")]
    produce(kafka_bootstrap, topic, probes)
    scored = consume(kafka_bootstrap, worker.topics["PREDICTIONS_TOPIC"], at_least(len(training) + 2))
    predictions = _predictions(scored)
    flagged, normal = predictions["after-1"], predictions["normal-999"]
    assert float(flagged["fraud_probability"]) >= THRESHOLD > float(normal["fraud_probability"]), (flagged, normal)
    consume(kafka_bootstrap, worker.topics["TRANSACTIONS_DLQ_TOPIC"], at_least(1))

    browser = headless_chromium()
    try:
        browser.get(worker.web_url + "/")
        wait_rendered(browser)
        try:  # the page polls every 2 s: the probe shows within a few polls
            row = WebDriverWait(browser, 30).until(
                lambda b: b.find_elements(By.CSS_SELECTOR, '#high-scores tr[data-tx-id="after-1"]')
            )[0]
        except TimeoutException:
            browser.save_screenshot(str(tmp_path / "operator-page.png"))
            pytest.fail(f"the high score never showed:\n{browser.find_element(By.TAG_NAME, 'body').text}")

        def text(element_id: str) -> str:
            return str(browser.find_element(By.ID, element_id).text)

        assert text("status") == "degraded"
        assert any(i.text.startswith("error rate") for i in browser.find_elements(By.CSS_SELECTOR, "#issues li"))
        assert text("model-version") == flagged["model_version"]
        assert float(text("throughput")) > 0
        assert text("labels-learned") == str(len(training))
        assert text("worker") == worker.env["WORKER_ID"]
        dead = browser.find_elements(By.CSS_SELECTOR, '#dead-letters tr[data-code="invalid_json"] td')
        assert [d.text for d in dead] == ["transactions", "invalid_json", "1"]

        cells = row.find_elements(By.TAG_NAME, "td")
        assert cells[1].text == "after-1"
        assert float(cells[3].text) == pytest.approx(float(flagged["fraud_probability"]), abs=5e-4)
        reasons = [span.text.split(" = ")[0] for span in row.find_elements(By.CSS_SELECTOR, ".reason")]
        assert reasons and reasons == flagged["reasons"]
        assert "amount=901" in str(cells[5].get_attribute("textContent"))  # the features as scored (folded)
        shown = [r.get_attribute("data-tx-id") for r in browser.find_elements(By.CSS_SELECTOR, "#high-scores tr")]
        assert shown[0] == "after-1" and "normal-999" not in shown  # newest first; only what crossed the threshold
        assert flagged["rules"] == ["night-big"] and flagged["rule_set_version"] == version
        assert text("rule-set-version") == str(version)
        rule_row = browser.find_elements(By.CSS_SELECTOR, '#rules tr[data-rule="night-big"] td')
        assert [c.text for c in rule_row] == ["night-big", "review", "active", "0", rule["expression"], "1", "1"]

        # the model lines: the champion's version and rolling figures as the health event has them
        models = loads(worker.http_get("/status.json"))["models"]
        champion = browser.find_elements(By.CSS_SELECTOR, '#model-lines tr[data-role="champion"] td')
        assert [c.text for c in champion[:2]] == ["champion", models["champion"]["version"]]
        assert champion[2].text == str(models["champion"]["labelled"]) and int(champion[2].text) > 0

        # the drift section: the score's bins now against the reference, two bars a bin, and the worst features
        report = loads(worker.http_get("/status.json"))["drift"]
        bins = len(report["score_bins"]["reference"])
        assert bins >= 2 and text("drift-status") == report["status"] == "drift"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#drift-chart rect.bar.reference")) == bins
        assert len(browser.find_elements(By.CSS_SELECTOR, "#drift-chart rect.bar.current")) == bins
        rows = browser.find_elements(By.CSS_SELECTOR, "#drift-features tr")
        features = [r.get_attribute("data-feature") for r in rows]
        assert features and features == [w["feature"] for w in report["worst"]], features
    finally:
        browser.quit()
