"""Behaviour scoring bench: detection bars on simulated organisations, and feature-update throughput.

    .venv/bin/python bench/scoring.py                 # 1000 people, every shape, seeds 1-2, 10 and 60 days of history
    .venv/bin/python bench/scoring.py --population 300 --shapes noisy --seeds 1 --history 10
    .venv/bin/python bench/scoring.py --population 400 --history 5 --set learning_days=3   # a setting changed
    .venv/bin/python bench/scoring.py --shapes devices --history 10 --acting-days 50 --insiders 70 \
        --scenarios after_hours_usb_leak job_search_usb sysadmin_keylogger    # CERT r4.2's density and scenarios
    .venv/bin/python bench/scoring.py --shapes devices desktops --cert    # evaluated through the CERT layout
    make compiled && PYTHONPATH=build/compiled .venv/bin/python bench/scoring.py ...   # the compiled engine

Each organisation has `history` quiet days before insiders may act and `--acting-days` (12) days after, with
`--insiders` incidents (one per 100 people) of the `--scenarios` (all) in turn. Bars (issues 5 and 15):
every injected incident caught within a 0.5% daily budget before its end, mean percentile of
malicious user-days >= 97, fewer than 1 false finding per 1,000 users per day, >= 100,000 feature updates/s on one
core. Throughput is `ScoringEngine.observe` over events already decoded, with day closing (ranking, peer statistics)
timed separately: the events that close dates are timed as closing. `could` is the most incidents any ranking could
catch with that budget (`most_catchable`): where more incidents act only on the same days than the budget has
places, no ranking catches them all. With `--cert` (shapes `devices` and `desktops`) the organisation is evaluated
as the held-out benchmark is: through CERT `logon.csv`, `device.csv` and `LDAP.csv`, labelled by the answers'
details files.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import tempfile
import time
from pathlib import Path

import orjson
import yaml

from custodes.config import ScoringSettings
from custodes.detections.scoring import engine as engine_module
from custodes.detections.scoring.cert_layout import write_cert
from custodes.detections.scoring.engine import ScoringEngine
from custodes.detections.scoring.evaluate import evaluate, load_labels, read_events
from custodes.detections.scoring.identity import IdentityResolver, load_directory
from custodes.detections.scoring.simulate import DEVICE_SHAPES, SCENARIOS, SHAPES, SimulationSettings, simulate


def throughput(folder: Path, settings: ScoringSettings) -> tuple[float, float, int]:
    """(feature updates/s excluding day closing, end-to-end events/s, median bytes of one entity's stored state)."""
    events = list(read_events(sorted(folder.glob("*.ndjson"))))
    # The decoded events are the bench's input buffer, which a running service never holds: kept out of the
    # collector's generations so that its passes over them are not counted as the engine's work.
    gc.freeze()
    resolver = IdentityResolver(load_directory(folder / "directory.json"), settings.identities)
    engine = ScoringEngine(settings, resolver, org_domains=["corp.example"])
    closing = 0.0
    clock = time.perf_counter
    started = clock()
    for event in events:
        # an event that closes dates (it passes the next date's end) is timed as closing: one clock read each side
        closed, before = engine.closed_through, clock()
        engine.observe(event)
        if engine.closed_through != closed:
            closing += clock() - before
    total = clock() - started
    gc.unfreeze()
    engine.flush()
    sizes = sorted(len(orjson.dumps(s.to_json())) for s in engine.states.values())
    return len(events) / (total - closing), len(events) / total, sizes[len(sizes) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--population", type=int, nargs="+", default=[1000])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--history", type=int, nargs="+", default=[10, 60], help="quiet days before insiders act")
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--acting-days", type=int, default=12, help="days after the history in which insiders act")
    parser.add_argument("--insiders", type=int, help="incidents injected (default: one per 100 people)")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--cert", action="store_true", help="evaluate through the CERT layout (devices, desktops)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a scoring setting other than its default, as YAML (e.g. --set learning_days=3); repeatable",
    )
    args = parser.parse_args()
    if args.cert and not set(args.shapes) <= set(DEVICE_SHAPES):
        parser.error(f"--cert needs --shapes among {', '.join(DEVICE_SHAPES)}")
    overrides = {name: yaml.safe_load(value) for name, _, value in (item.partition("=") for item in args.set)}
    header = (
        f"{'shape':>6} {'hist':>4} {'people':>6} {'seed':>4} {'events':>9} {'budget':>6} {'caught':>7} {'could':>5} "
        f"{'pctile':>6} {'recall@b':>8} {'FF/1k/d':>7} {'delay':>5} {'upd/s':>8} {'e2e/s':>8} {'state B':>7}"
    )
    compiled = Path(engine_module.__file__ or "").suffix != ".py"
    print(f"engine: {'compiled with mypyc' if compiled else 'interpreted'} ({engine_module.__file__})")
    print(header)
    failures: list[tuple[str, int, int, int, str]] = []
    for shape, history, population, seed in itertools.product(args.shapes, args.history, args.population, args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            knobs = SimulationSettings(
                population=population,
                days=history + args.acting_days,
                warmup_days=history,
                seed=seed,
                noise=args.noise,
                shape=shape,
                scenarios=tuple(args.scenarios),
                insiders=args.insiders,
            )
            sim = simulate(knobs, folder)
            settings = ScoringSettings(directory=folder / "directory.json", pseudonymise=False, **overrides)
            if args.cert:
                write_cert(sim, folder)
                cert = settings.model_copy(update={"directory": folder / "LDAP.csv"})
                files = [folder / "logon.csv", folder / "device.csv"]
                result = evaluate(files, load_labels(folder / "answers"), cert)
            else:
                result = evaluate(sim.files, load_labels(folder / "labels.json"), settings)
            updates, end_to_end, state_bytes = throughput(folder, settings)
            delays = [i.delay_days for i in result.incidents if i.delay_days is not None]
            print(
                f"{shape:>6} {history:>4} {population:>6} {seed:>4} {result.events:>9} {result.budget:>6} "
                f"{result.caught:>3}/{len(result.incidents):<3} {result.catchable:>5} {result.mean_percentile:>6.2f} "
                f"{100 * result.recall[result.budget]:>7.1f}% {result.false_findings_per_1000_user_days:>7.3f} "
                f"{(sum(delays) / len(delays)) if delays else float('nan'):>5.1f} {updates:>8.0f} "
                f"{end_to_end:>8.0f} {state_bytes:>7}",
                flush=True,
            )
            bars = {
                "every insider caught": result.caught == len(result.incidents),
                "percentile >= 97": result.mean_percentile >= 97,
                "FF < 1": result.false_findings_per_1000_user_days < 1,
                "upd/s >= 100k": updates >= 100_000,
            }
            print("       " + " | ".join(f"{bar} {'PASS' if ok else 'FAIL'}" for bar, ok in bars.items()))
            print(
                "       by scenario (caught, recall@b, pctile): "
                + " | ".join(
                    f"{s.scenario} {s.caught}/{s.incidents} {100 * s.recall:.1f}% {s.mean_percentile:.2f}"
                    for s in result.scenarios
                )
            )
            missed = [f"{i.incident} {i.scenario} (best rank {i.best_rank})" for i in result.incidents if not i.caught]
            if missed:
                print(f"       missed: {', '.join(missed)}")
            failures += [(shape, history, population, seed, bar) for bar, ok in bars.items() if not ok]
    print("all bars met" if not failures else f"bars missed: {failures}")


if __name__ == "__main__":
    main()
