#!/usr/bin/env python3
"""Where the other scenarios' AP goes when a pattern is added: reads ``scripts/adaptation.py --scores-out`` files.

    python scripts/adaptation_diagnosis.py /tmp/adapt-out/base-seed0.npz /tmp/adapt-out/base-seed1.npz

Over the other scenarios' transactions from the day of the pattern's first labels on: the AP on the cards the
pattern never tested, on tested cards before and after their first test; the AP over all cards with the tested
cards' later transactions scored as in the run without the pattern (their legitimate ones, their frauds, both);
the compromised-card frauds (scenario 3) with one of the pattern's cash-outs in their card's last 30 days and
without; the legitimate transactions with the pattern on their card in the last 7 days.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.learning.quality import average_precision  # noqa: E402
from lab.changes import SCENARIO_CARD_TESTING  # noqa: E402

DAY_S = 86400.0
CASHOUT_MIN_AMOUNT = 300.0  # card testing's cash-outs are 300 to 1,500; its probes 0.5 to 2.0


def _within(t: np.ndarray, cards: np.ndarray, marks: dict[str, list[float]], window_s: float) -> np.ndarray:
    """Whether a mark of the transaction's card lies in (t - window, t)."""
    return np.array([any(0 < ti - m <= window_s for m in marks.get(c, ())) for ti, c in zip(t, cards, strict=True)])


def diagnose(path: Path) -> None:
    d = np.load(path)
    t, card, amount, fraud, scenario = d["t_s"], d["customer"], d["amount"], d["fraud"], d["scenario"]
    with_new, without = d["with_new"], d["without"]
    new = scenario == SCENARIO_CARD_TESTING
    first_label_s = t[new].min() + 7 * DAY_S
    after = (t // DAY_S >= int(first_label_s // DAY_S)) & ~new  # as scripts/adaptation.py pools them
    first_test: dict[str, float] = {}
    for c, ti in zip(card[new], t[new], strict=True):
        first_test[c] = min(first_test.get(c, np.inf), ti)
    tested = np.array([c in first_test for c in card])
    post = tested & (t > np.array([first_test.get(c, np.inf) for c in card]))

    def ap(mask: np.ndarray, scores: np.ndarray) -> float:
        return float(average_precision(fraud[mask], scores[mask]))

    print(
        f"{path.name}: {after.sum()} transactions of the other scenarios from the first labels, {fraud[after].sum()} "
        f"frauds; on tested cards {np.mean(tested[after]):.3f}, after their test {np.mean(post[after]):.3f}"
    )
    print(f"  AP over all cards with / without the pattern: {ap(after, with_new):.4f} / {ap(after, without):.4f}")
    for name, mask in (("untested cards", ~tested), ("tested, before the test", tested & ~post),
                       ("tested, after the test", post)):  # fmt: skip
        m = after & mask
        print(
            f"  {name}: {m.sum()} transactions, {fraud[m].sum()} frauds, AP {ap(m, with_new):.4f} / "
            f"{ap(m, without):.4f}"
        )
    for name, swap in (("both", post), ("legitimate", post & ~fraud), ("frauds", post & fraud)):
        print(
            f"  AP over all cards, tested cards' later {name} scored as without: "
            f"{ap(after, np.where(swap, without, with_new)):.4f}"
        )
    cashouts: dict[str, list[float]] = {}
    tests: dict[str, list[float]] = {}
    for c, ti, a in zip(card[new], t[new], amount[new], strict=True):
        tests.setdefault(c, []).append(ti)
        if a >= CASHOUT_MIN_AMOUNT:
            cashouts.setdefault(c, []).append(ti)
    s3 = (scenario == 3) & (t >= first_label_s)
    near = _within(t[s3], card[s3], cashouts, 30 * DAY_S)
    for name, m in (("a cash-out in its card's last 30 days", near), ("none", ~near)):
        w, wo = with_new[s3][m], without[s3][m]
        print(f"  scenario 3 frauds, {name}: {m.sum()}, mean score {w.mean():.3f} / {wo.mean():.3f}, recall at 0.5 "
              f"{np.mean(w > 0.5):.3f} / {np.mean(wo > 0.5):.3f}")  # fmt: skip
    legit = ~fraud & (t >= first_label_s)
    recent = _within(t[legit], card[legit], tests, 7 * DAY_S)
    print(f"  legitimate, the pattern on the card in the last 7 days: {recent.sum()}, mean score "
          f"{with_new[legit][recent].mean():.3f} / {without[legit][recent].mean():.3f}; the others "
          f"{with_new[legit][~recent].mean():.3f} / {without[legit][~recent].mean():.3f}")  # fmt: skip


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        diagnose(Path(arg))
