"""CERT insider-threat dataset CSVs read by `custodes eval scoring` and `custodes replay`: logon, device, http, email,
file and LDAP."""

from __future__ import annotations

import csv
import gzip
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from custodes.cli import app
from custodes.config import ScoringSettings
from custodes.connectors import files
from custodes.connectors.cert import cert_records, cert_times
from custodes.connectors.files import BOM
from custodes.detections.scoring.evaluate import evaluate, load_labels
from custodes.detections.scoring.features import Extractor
from custodes.detections.scoring.identity import load_directory
from custodes.errors import CustodesError

START = datetime(2010, 1, 4)
USERS = [f"ABC{n:04d}" for n in range(40)]
INSIDER = USERS[7]
ACT_DAY = 12
HEADER = "id,date,user,pc,activity\n"


def stamp(when: datetime) -> str:
    return when.strftime("%m/%d/%Y %H:%M:%S")


def write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    rows.sort(key=lambda r: datetime.strptime(r[1], "%m/%d/%Y %H:%M:%S"))
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(header)
        out.writerows(rows)
    return path


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cert")
    rng = random.Random(3)
    logon, device, http, email, files = [], [], [], [], []
    n = 0

    def uid() -> str:
        nonlocal n
        n += 1
        return f"{{X{n:08d}}}"

    for day in range(ACT_DAY + 2):
        base = START + timedelta(days=day)
        for i, user in enumerate(USERS):
            pc = f"PC-{i:04d}"
            login = base + timedelta(hours=8, minutes=rng.randint(0, 60))
            logon.append([uid(), stamp(login), f"DTAA/{user}", pc, "Logon"])
            logon.append([uid(), stamp(login + timedelta(hours=9)), f"DTAA/{user}", pc, "Logoff"])
            for _ in range(rng.randint(2, 5)):
                when = login + timedelta(minutes=rng.randint(5, 500))
                http.append([uid(), stamp(when), f"DTAA/{user}", pc, "http://news.example.com/a", "WWW Visit", "x"])
                to = f"{USERS[rng.randrange(40)].lower()}@dtaa.com"
                email.append(
                    [uid(), stamp(when), f"DTAA/{user}", pc, to, "", "", f"{user}@dtaa.com", "Send", "900", "", "hi"]
                )
            if i >= 20:  # half the company uses USB sticks every day
                when = login + timedelta(hours=2)
                device.append([uid(), stamp(when), f"DTAA/{user}", pc, "E:\\", "Connect"])
                device.append([uid(), stamp(when + timedelta(minutes=30)), f"DTAA/{user}", pc, "", "Disconnect"])
        if day == ACT_DAY:
            when = base + timedelta(hours=23)
            device.append([uid(), stamp(when), f"DTAA/{INSIDER}", "PC-0007", "E:\\", "Connect"])
            for k in range(6):
                row = [uid(), stamp(when + timedelta(minutes=k + 1)), f"DTAA/{INSIDER}", "PC-0007"]
                files.append([*row, f"E:\\docs\\{k}.doc", "File Copy", "True", "False", "x"])
            row = [uid(), stamp(when + timedelta(minutes=20)), f"DTAA/{INSIDER}", "PC-0007"]
            http.append([*row, "http://wikileaks.org/submit", "WWW Upload", "x"])
    write(folder / "logon.csv", ["id", "date", "user", "pc", "activity"], logon)
    write(folder / "device.csv", ["id", "date", "user", "pc", "activity"], [[*r[:4], r[5]] for r in device])
    write(folder / "http.csv", ["id", "date", "user", "pc", "url", "activity", "content"], http)
    email_header = ["id", "date", "user", "pc", "to", "cc", "bcc", "from", "activity", "size", "attachments", "content"]
    write(folder / "email.csv", email_header, email)
    file_header = ["id", "date", "user", "pc", "filename", "activity", "to_removable_media", "from_removable_media"]
    write(folder / "file.csv", [*file_header, "content"], files)
    with (folder / "LDAP.csv").open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["employee_name", "user_id", "email", "role", "business_unit", "department", "team"])
        for user in USERS:
            out.writerow([f"Name {user}", user, f"{user}@dtaa.com", "Engineer", "1", "R&D", "1"])
    act = (START + timedelta(days=ACT_DAY, hours=23)).isoformat() + "Z"
    label = {"incident": "r1", "scenario": "usb_leak", "person": INSIDER, "start": act, "end": act}
    (folder / "labels.json").write_bytes(orjson.dumps([label]))
    return folder


def test_ldap_csv_is_a_directory(cert: Path) -> None:
    people = load_directory(cert / "LDAP.csv")
    assert len(people) == 40 and people[7].id == f"{INSIDER.lower()}@dtaa.com" and people[7].aliases == [INSIDER]
    (cert / "bad.csv").write_text("name,role\nx,y\n")
    with pytest.raises(CustodesError, match="user_id and email"):
        load_directory(cert / "bad.csv")


def test_a_folder_of_monthly_ldap_snapshots_is_everyone_in_any_as_the_latest_names_them(tmp_path: Path) -> None:
    header = "employee_name,user_id,email,role,business_unit,functional_unit,department,team,supervisor\n"
    folder = tmp_path / "LDAP"
    folder.mkdir()
    (folder / "2010-01.csv").write_text(
        header
        + "Ann,AAA0001,ann@dtaa.com,Salesman,1,Sales,Sales,1,Bob\nCid,CCC0003,cid@dtaa.com,IT Admin,1,IT,IT,2,Bob\n"
        + "Dee,DDD0004,dee@dtaa.com,Engineer,1,2 - Research,1 - Lab,3,Bob\n"
        + "Eve,EEE0005,eve@dtaa.com,Engineer,1,3 - Manufacturing,1 - Lab,4,Bob\n"
    )
    (folder / "2010-02.csv").write_text(header + "Ann,AAA0001,ann@dtaa.com,Manager,1,Sales,Sales,1,Bob\n")
    (folder / "notes.txt").write_text("not a snapshot")
    people = {person.id: person for person in load_directory(folder)}
    assert set(people) == {"ann@dtaa.com", "cid@dtaa.com", "dee@dtaa.com", "eve@dtaa.com"}  # Cid left after January
    departments = [people[f"{name}@dtaa.com"].department for name in ("ann", "cid", "dee", "eve")]
    assert departments == ["Sales", "IT", "2 - Research / 1 - Lab", "3 - Manufacturing / 1 - Lab"]  # a Lab of each
    assert people["ann@dtaa.com"].title == "Manager" and people["cid@dtaa.com"].aliases == ["CCC0003"]
    assert people["cid@dtaa.com"].departure_date is None  # leaving is not read off the snapshots
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CustodesError, match="CERT LDAP CSV files"):
        load_directory(empty)
    (folder / "2010-03.csv").write_text("name,role\nx,y\n")
    with pytest.raises(CustodesError, match=r"2010-03\.csv.*user_id and email"):
        load_directory(folder)


def test_cert_files_are_scored_and_the_usb_leak_ranks_first(cert: Path) -> None:
    settings = ScoringSettings(directory=cert / "LDAP.csv", pseudonymise=False, warmup_days=5)
    files = [cert / f"{name}.csv" for name in ("logon", "device", "http", "email", "file")]
    result = evaluate(files, load_labels(cert / "labels.json"), settings, budget_share=0.025)
    assert result.warnings == []
    assert result.population == 40 and result.events > 5000
    assert result.caught == 1 and result.incidents[0].best_rank == 1
    disconnect = {"event": {"category": ["host"], "action": "usb-device-disconnected"}, "user": {"name": "a"}}
    observation = Extractor(settings).extract(disconnect)
    assert observation is not None and observation.features == []


def test_cert_csvs_are_read_as_they_come_gzip_and_multi_line_fields_included(cert: Path, tmp_path: Path) -> None:
    def lines() -> Iterator[str]:  # rows become records as their lines arrive: a web log of gigabytes is not held
        yield "id,date,user,pc,activity\r\n"
        yield "{A},01/04/2010 08:00:00,DTAA/X,PC-1,Logon\r\n"
        raise AssertionError("read past the first row")

    records = cert_records(lines())
    assert records is not None
    first = next(records)[1]
    assert isinstance(first, dict) and first["event"]["action"] == "logged-in"
    text = (cert / "http.csv").read_bytes().decode()  # as the csv module wrote it: rows end with CR LF
    quoted = text.replace(",x\r\n", ',"a page, over\ntwo lines"\r\n', 3)
    assert quoted.count("\n") == text.count("\n") + 3
    packed = tmp_path / "http.csv.gz"
    packed.write_bytes(gzip.compress(quoted.encode()))
    settings = ScoringSettings(directory=cert / "LDAP.csv", pseudonymise=False, warmup_days=5)
    files = [cert / f"{name}.csv" for name in ("logon", "device", "email", "file")]
    plain = evaluate([*files, cert / "http.csv"], load_labels(cert / "labels.json"), settings, budget_share=0.025)
    streamed = evaluate([*files, packed], load_labels(cert / "labels.json"), settings, budget_share=0.025)
    assert streamed.events == plain.events and streamed.caught == plain.caught == 1


def test_a_cert_csv_out_of_time_order_is_sorted_and_said_so(cert: Path, tmp_path: Path) -> None:
    header, *rows = (cert / "logon.csv").read_bytes().decode().splitlines(keepends=True)
    (tmp_path / "logon.csv").write_text(header + "".join(reversed(rows)), newline="")
    settings = ScoringSettings(directory=cert / "LDAP.csv", pseudonymise=False, warmup_days=5)
    files = [cert / f"{name}.csv" for name in ("device", "http", "email", "file")]
    ordered = evaluate([*files, cert / "logon.csv"], load_labels(cert / "labels.json"), settings, budget_share=0.025)
    reversed_ = evaluate(
        [*files, tmp_path / "logon.csv"], load_labels(cert / "labels.json"), settings, budget_share=0.025
    )
    assert reversed_.warnings == [
        f"{tmp_path / 'logon.csv'}: {len(rows) - 1} records out of time order; the file was sorted by time"
    ]
    assert (reversed_.events, reversed_.caught, reversed_.mean_percentile) == (
        ordered.events,
        ordered.caught,
        ordered.mean_percentile,
    )


def test_files_saved_with_a_byte_order_mark_and_crlf_read_as_the_datasets_do(cert: Path, tmp_path: Path) -> None:
    for name in ("logon.csv", "device.csv", "LDAP.csv", "labels.json"):  # as a Windows spreadsheet saves them
        text = (cert / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        (tmp_path / name).write_bytes(BOM + text)
    folder = answers(cert, tmp_path / "answers")
    (folder / "insiders.csv").write_bytes(BOM + (folder / "insiders.csv").read_bytes())
    people = load_directory(cert / "LDAP.csv")
    assert load_directory(tmp_path / "LDAP.csv") == people and people[0].display_name == "Name ABC0000"
    settings = ScoringSettings(directory=cert / "LDAP.csv", pseudonymise=False, warmup_days=5)
    marked = settings.model_copy(update={"directory": tmp_path / "LDAP.csv"})
    plain = evaluate([cert / "logon.csv", cert / "device.csv"], load_labels(cert / "labels.json"), settings)
    read = evaluate([tmp_path / "logon.csv", tmp_path / "device.csv"], load_labels(tmp_path / "labels.json"), marked)
    assert read.warnings == plain.warnings == []
    assert (read.events, read.caught, read.mean_percentile) == (plain.events, plain.caught, plain.mean_percentile)
    assert len(load_labels(folder, dataset="4.2")) == 3


def test_files_without_events_are_refused_and_labels_off_their_dates_are_said(cert: Path, tmp_path: Path) -> None:
    (tmp_path / "logon.csv").write_text("id,date,user,pc,activity\n")
    settings = ScoringSettings(directory=cert / "LDAP.csv", pseudonymise=False, warmup_days=5)
    labels = load_labels(cert / "labels.json")
    with pytest.raises(CustodesError, match=r"no events in .*logon.csv: nothing to score"):
        evaluate([tmp_path / "logon.csv"], labels, settings)
    with pytest.raises(CustodesError, match="is a folder, not a log file: name the files in it"):
        evaluate([cert], labels, settings)
    with pytest.raises(CustodesError, match=r"a labels folder is the CERT answers folder, with insiders\.csv"):
        load_labels(tmp_path)
    act = START + timedelta(days=400)  # a year after the files end: the labels of another release, say
    (tmp_path / "later.json").write_bytes(orjson.dumps([{"person": INSIDER, "start": act, "end": act}]))
    result = evaluate([cert / "logon.csv"], load_labels(tmp_path / "later.json"), settings)
    assert result.warnings == [
        f"1 of 1 labelled malicious user-days (from {act.date()} to {act.date()}) are on no date the events cover "
        "(they count as missed): are the labels of these files' release?"
    ]


def test_cert_times_read_alike_padded_or_not_and_impossible_ones_are_refused(tmp_path: Path) -> None:
    def first_time(value: str) -> str:
        rows = cert_records([HEADER, f"{{A}},{value},DTAA/X,PC-1,Logon\n"])
        assert rows is not None
        _, record, problem = next(rows)
        return str(record["@timestamp"]) if isinstance(record, dict) else str(problem)

    def order_time(value: str) -> list[str]:  # what the time-order check reads of the row
        return list(cert_times([HEADER, f"{{A}},{value},DTAA/X,PC-1,Logon\n"]))

    assert first_time("01/04/2010 08:00:05") == first_time("1/4/2010 8:00:05") == "2010-01-04T08:00:05+00:00"
    assert first_time("1/4/2010 8:00") == "2010-01-04T08:00:00+00:00"  # as a spreadsheet saves it, without seconds
    assert order_time("1/4/2010 8:00") == ["2010-01-04T08:00:00"]
    assert order_time("01/04/2010 08:00:05") == order_time("1/4/2010 8:00:05") == ["2010-01-04T08:00:05"]
    assert first_time("02/29/2012 23:59:59") == "2012-02-29T23:59:59+00:00"
    for impossible in ("02/30/2010 08:00:00", "13/04/2010 08:00:00", "01/04/2010 24:00:00", "2010-01-04 08:00:00"):
        assert first_time(impossible).startswith("line 2: not a CERT logon or device row (")
        assert order_time(impossible) == []  # skipped by the reading pass: nothing to order by
    assert order_time("02/29/2012 23:59:59") == ["2012-02-29T23:59:59"]
    assert order_time("yesterday") == []


def test_a_csv_not_of_cert_events_is_read_as_its_columns_and_a_datasets_other_csvs_are_refused(
    cert: Path, tmp_path: Path
) -> None:
    (cert / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CustodesError, match=r"other\.csv: 1 records were not scored: 1 without a time"):
        evaluate([cert / "other.csv"], [], ScoringSettings(pseudonymise=False))
    assert list(files.iter_records(cert / "other.csv")) == [(2, {"a": "1", "b": "2"}, None)]  # as replay reads it
    misplaced = {  # a dataset's other CSVs, given as events: said where they go
        "LDAP.csv": (
            "employee_name,user_id,email,role\nA B,ABC0001,a@x.example,IT\n",
            r"it is a CERT LDAP file \(people, not events\): .* \(eval scoring's --directory, or scoring\.directory\)",
        ),
        "insiders.csv": (
            "dataset,scenario,details,user,start,end\n",
            r"it is the answers' insiders\.csv \(labels, not events\): give it to eval scoring's --labels",
        ),
        "psychometric.csv": (
            "employee_name,user_id,O,C,E,A,N\n",
            r"it is a CERT psychometric file \(people's traits, not events\): the evaluation does not read it",
        ),
    }
    for name, (text, message) in misplaced.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(CustodesError, match=rf"{name}: {message}"):
            list(files.iter_records(tmp_path / name))


def test_replay_reads_cert_csvs_as_eval_does_and_keeps_a_row_not_of_its_kind_with_its_line(
    cert: Path, tmp_path: Path
) -> None:
    lines = (cert / "device.csv").read_text().splitlines(keepends=True)
    (tmp_path / "device.csv").write_text("".join([*lines[:3], "{B1},01/05/2010 09:00:00,DTAA/X\n", *lines[3:]]))
    rows = list(files.iter_records(tmp_path / "device.csv"))
    assert len(rows) == len(lines)  # every row, the header not one
    assert rows[2] == (4, ["{B1}", "01/05/2010 09:00:00", "DTAA/X"], "line 4: not a CERT logon or device row (no pc)")
    read = [record for _, record, warning in rows if warning is None]
    assert read == [record for _, record, _ in files.iter_records(cert / "device.csv")]
    assert {r["event"]["action"] for r in read} == {"usb-device-connected", "usb-device-disconnected"}


def test_custodes_replay_stores_cert_csvs_resumes_and_entity_explain_tells_the_leak(cert: Path, tmp_path: Path) -> None:
    config = tmp_path / "custodes.yaml"
    config.write_text(
        f"database: {{url: 'sqlite+aiosqlite:///{tmp_path / 'store.db'}'}}\n"
        "sources: {cert: {format: generic}}\n"
        f"scoring: {{directory: '{cert / 'LDAP.csv'}', pseudonymise: false, warmup_days: 5}}\n"
    )
    paths = [cert / f"{name}.csv" for name in ("logon", "device", "file", "http")]
    rows = sum(len(path.read_text().splitlines()) - 1 for path in paths)
    replay = ["replay", *map(str, paths), "--source", "cert", "-c", str(config), "--json"]
    replayed = CliRunner().invoke(app, replay)
    assert replayed.exit_code == 0, replayed.output
    summary = orjson.loads(replayed.stdout)
    assert (summary["received"], summary["stored"], summary["with_warnings"]) == (rows, rows, 0)
    again = CliRunner().invoke(app, replay)
    assert again.exit_code == 0 and orjson.loads(again.stdout)["received"] == 0, "a replay resumes where it stopped"
    explained = CliRunner().invoke(app, ["entity", "explain", INSIDER, "-c", str(config), "--days", "5"])
    assert explained.exit_code == 0, explained.output
    act = (START + timedelta(days=ACT_DAY)).date().isoformat()
    last = (START + timedelta(days=ACT_DAY + 1)).date().isoformat()  # the files' last date, closed by the replay
    assert f"{INSIDER.lower()}@dtaa.com {act}: risk" in explained.output and f"{last}: risk" in explained.output
    told = explained.output.split(f"{act}: risk")[1].split("@dtaa.com")[0]
    assert "first upload to a leak or paste site" in told and "first files written to USB" in told


def test_rows_not_of_their_cert_file_are_skipped_and_said_with_their_line(cert: Path, tmp_path: Path) -> None:
    settings = ScoringSettings(directory=cert / "LDAP.csv", pseudonymise=False, warmup_days=5)
    labels = load_labels(cert / "labels.json")
    lines = (cert / "logon.csv").read_text().splitlines(keepends=True)
    when = lines[1].split(",")[1]  # in time order, so that nothing is sorted
    broken = [
        f'{{Q}},{when},DTAA/X,PC-1,"a quoted\nfield over two lines",Logon\n',  # a row as the CSV reader reads it
        f"{{B1}},{when},DTAA/X\n",  # cut short
        "{B2},yesterday,DTAA/X,PC-1,Logon\n",  # not a time
        f'{{B3}},{when},DTAA/X,"PC-{"x" * 200_000}",Logon\n',  # a field past the CSV reader's limit
    ]
    (tmp_path / "logon.csv").write_text("".join([*lines[:2], *broken, *lines[2:]]))
    plain = evaluate([cert / "logon.csv"], labels, settings)
    read = evaluate([tmp_path / "logon.csv"], labels, settings)
    assert read.warnings == [
        f"{tmp_path / 'logon.csv'}: 3 records were not scored: 3 not a row of the CERT file's kind "
        "(the first: line 5: not a CERT logon or device row (no pc))"
    ]
    assert (read.events, read.caught, read.mean_percentile) == (plain.events + 1, plain.caught, plain.mean_percentile)
    (tmp_path / "only.csv").write_text("id,date,user,pc,activity\nX,yesterday,U,PC,Logon\n")
    with pytest.raises(CustodesError, match=r"no events in .*only\.csv: nothing to score.*\n.*1 not a row of"):
        evaluate([tmp_path / "only.csv"], labels, settings)


def answers(cert: Path, folder: Path) -> Path:
    """An answers folder as the datasets ship it: `insiders.csv` for two releases and one details file."""
    acts = []
    for kind in ("device", "file", "http"):
        with (cert / f"{kind}.csv").open(newline="") as handle:
            for row in list(csv.reader(handle))[1:]:
                when = datetime.strptime(row[1], "%m/%d/%Y %H:%M:%S")
                if row[2].endswith(INSIDER) and when.hour == 23:
                    acts.append([kind, *row])
    assert len(acts) == 8
    act = START + timedelta(days=ACT_DAY, hours=23)
    acts.append(["logon", "{K1}", stamp(act + timedelta(days=1)), USERS[3], "PC-0007", "Logon"])
    (folder / "r4.2-1").mkdir(parents=True)
    with (folder / "r4.2-1" / f"r4.2-1-{INSIDER}.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(acts)  # no header; the web upload's content is quoted
    (folder / "insiders.csv").write_text(
        "dataset,scenario,details,user,start,end\n"
        f"4.2,1,r4.2-1-{INSIDER}.csv,{INSIDER},{stamp(act)},{stamp(act + timedelta(days=1))}\n"
        f"4.2,2,r4.2-2-{USERS[9]}.csv,{USERS[9]},{stamp(act - timedelta(days=3))},{stamp(act - timedelta(days=1))}\n"
        f"4.1,1,r4.1-1-ZZZ0001.csv,ZZZ0001,{stamp(act)},{stamp(act)}\n"
        "4.2,1,,,,\n"  # a row naming no insider is skipped
    )
    return folder


def test_cert_answers_are_labels_one_per_person_and_day_of_the_details_acts(cert: Path, tmp_path: Path) -> None:
    folder = answers(cert, tmp_path / "answers")
    with pytest.raises(CustodesError, match=r"insiders\.csv: lists insiders of CERT datasets 4\.1, 4\.2: name"):
        load_labels(folder)
    with pytest.raises(CustodesError, match=r"dataset 5\.2 is not among them with --dataset"):
        load_labels(folder, dataset="5.2")
    with pytest.raises(CustodesError, match=r"labels\.json: --dataset names a CERT release, but these labels are not"):
        load_labels(cert / "labels.json", dataset="4.2")
    warnings: list[str] = []
    labels = load_labels(folder / "insiders.csv", dataset="r4.2", warnings=warnings)
    act = START + timedelta(days=ACT_DAY, hours=23)
    day, next_day = act.date(), act.date() + timedelta(days=1)
    got = [(x.incident, x.scenario, x.person, x.role, x.start.date(), x.end.date()) for x in labels]
    assert got == [
        (f"r4.2-1-{INSIDER}", "after_hours_usb_leak", INSIDER, "insider", day, day),
        (f"r4.2-1-{INSIDER}", "after_hours_usb_leak", USERS[3], "compromised", next_day, next_day),
        (f"r4.2-2-{USERS[9]}", "job_search_usb", USERS[9], "insider", day - timedelta(days=3), day - timedelta(days=1)),
    ]
    assert labels[0].end - labels[0].start == timedelta(minutes=20)  # the day's first and last act
    assert warnings == [
        f"1 insiders' details files are not beside {folder / 'insiders.csv'} (for example r4.2-*/r4.2-2-{USERS[9]}"
        ".csv): each of them counts every day from its start to its end as malicious"
    ]
    settings = ScoringSettings(directory=cert / "LDAP.csv", pseudonymise=False, warmup_days=5)
    files = [cert / f"{name}.csv" for name in ("logon", "device", "http", "email", "file")]
    result = evaluate(files, [x for x in labels if x.person == INSIDER], settings, budget_share=0.025)
    assert result.caught == 1 and result.incidents[0].best_rank == 1 and result.malicious_user_days == 1
    (folder / "r4.2-1" / f"r4.2-1-{INSIDER}.csv").write_text("device,{A},yesterday,X,PC-1,Connect\n")
    with pytest.raises(CustodesError, match=rf"r4\.2-1-{INSIDER}\.csv: line 1: not a CERT answers record"):
        load_labels(folder, dataset="4.2")
    (folder / "r4.2-1" / f"r4.2-1-{INSIDER}.csv").unlink()  # its row's own times count then
    listed = (folder / "insiders.csv").read_text().replace(stamp(act - timedelta(days=1)), "soon")
    (folder / "insiders.csv").write_text(listed)
    with pytest.raises(CustodesError, match=r"insiders\.csv: line 3: end 'soon' is not a time; write MM/DD/YYYY"):
        load_labels(folder, dataset="4.2")


def test_eval_scoring_takes_the_answers_folder_and_the_release(cert: Path, tmp_path: Path) -> None:
    folder = answers(cert, tmp_path / "answers")
    args = ["eval", "scoring", "--labels", str(folder), "--directory", str(cert / "LDAP.csv"), "--json"]
    for name in ("logon", "device", "http", "email", "file"):
        args += ["--events", str(cert / f"{name}.csv")]
    unnamed = CliRunner().invoke(app, args)
    assert unnamed.exit_code == 2 and "CERT datasets 4.1, 4.2: name the one the events are from" in unnamed.output
    result = CliRunner().invoke(app, [*args, "--dataset", "4.2", "--budget-share", "0.025"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert [(i["incident"], i["caught"]) for i in report["incidents"]] == [
        (f"r4.2-1-{INSIDER}", True),
        (f"r4.2-2-{USERS[9]}", False),
    ]
    assert report["warnings"][0].startswith("1 insiders' details files are not beside")


def test_labelled_days_without_an_event_of_the_person_are_said(cert: Path, tmp_path: Path) -> None:
    header, *rows = (cert / "logon.csv").read_text().splitlines(keepends=True)
    day = START + timedelta(days=5)
    away = [r for r in rows if not (INSIDER in r and r.split(",")[1].startswith(day.strftime("%m/%d/%Y")))]
    assert len(away) == len(rows) - 2
    (tmp_path / "logon.csv").write_text(header + "".join(away))
    act = (day + timedelta(hours=12)).isoformat() + "Z"
    (tmp_path / "labels.json").write_bytes(orjson.dumps([{"person": INSIDER, "start": act, "end": act}]))
    settings = ScoringSettings(directory=cert / "LDAP.csv", pseudonymise=False, warmup_days=5)
    labels = load_labels(tmp_path / "labels.json")
    assert evaluate([cert / "logon.csv"], labels, settings).warnings == []
    assert evaluate([tmp_path / "logon.csv"], labels, settings).warnings == [
        "1 of 1 labelled malicious user-days have no event of the person in the files scored (they count as "
        "missed): their acts are in records not given, or were not recorded"
    ]


def test_days_whose_acts_are_only_in_records_not_scored_are_measured_apart(cert: Path, tmp_path: Path) -> None:
    folder = answers(cert, tmp_path / "answers")
    seeker = USERS[9]
    with (cert / "http.csv").open(newline="") as handle:
        visits = [["http", *row] for row in list(csv.reader(handle))[1:] if row[2].endswith(seeker)]
    act = START + timedelta(days=ACT_DAY)
    days = {(act - timedelta(days=n)).strftime("%m/%d/%Y") for n in (1, 2, 3)}
    visits = [row for row in visits if row[2][:10] in days]
    (folder / "r4.2-2").mkdir()
    with (folder / "r4.2-2" / f"r4.2-2-{seeker}.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(visits)  # the job seeker's acts are web visits alone
    labels = load_labels(folder, dataset="4.2")
    assert [(x.person, sorted(x.kinds)) for x in labels] == [
        (INSIDER, ["device", "file", "http"]),
        (USERS[3], ["logon"]),
        *[(seeker, ["http"])] * 3,
    ]
    settings = ScoringSettings(directory=cert / "LDAP.csv", pseudonymise=False, warmup_days=5)
    every = [cert / f"{name}.csv" for name in ("logon", "device", "http", "email", "file")]
    whole = evaluate(every, labels, settings, budget_share=0.025)
    assert whole.in_data is None and whole.warnings == [] and whole.malicious_user_days == 5
    scored = evaluate([cert / "logon.csv", cert / "device.csv"], labels, settings, budget_share=0.025)
    shown = scored.in_data
    assert shown is not None and shown.kinds == ["device", "logon"] and shown.malicious_user_days == 2
    assert scored.malicious_user_days == 5 and scored.recall[1] == 0.2
    assert shown.recall == 0.5  # the insider's night copy is first; the account used the next day is not
    account = evaluate([cert / "logon.csv", cert / "device.csv"], labels[1:2], settings, budget_share=0.025)
    assert shown.mean_percentile == pytest.approx((100 + account.mean_percentile) / 2)  # the web visits' days apart
    assert shown.mean_percentile != pytest.approx(scored.mean_percentile)
    by_scenario = {s.scenario: s for s in scored.scenarios}
    seeking, leak = by_scenario["job_search_usb"], by_scenario["after_hours_usb_leak"]
    assert leak.in_data is None and leak.malicious_user_days == 2  # every day of it has acts in the files
    assert seeking.malicious_user_days == 3 and seeking.in_data is not None
    assert (seeking.in_data.malicious_user_days, seeking.in_data.recall) == (0, 0.0)
    assert scored.warnings == [
        "3 of 5 labelled malicious user-days have acts only in records of kinds the files scored do not hold (they "
        "hold device, logon): they count as missed; on the other 2, recall within the top 1/day is 50.0% and the "
        f"mean percentile {shown.mean_percentile:.2f}"
    ]
    args = ["eval", "scoring", "--labels", str(folder), "--dataset", "4.2", "--directory", str(cert / "LDAP.csv")]
    args += ["--events", str(cert / "logon.csv"), "--events", str(cert / "device.csv"), "--budget-share", "0.025"]
    table = CliRunner().invoke(app, args, env={"COLUMNS": "160"})
    assert table.exit_code == 0, table.output
    assert "recall of those with acts in device, logon records, top 1/day │ 50.0%" in table.stdout
    report = orjson.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    got = report["in_data"]
    assert (got["kinds"], got["malicious_user_days"], got["recall_at_budget"]) == (["device", "logon"], 2, 0.5)
    assert [(s["scenario"], s["in_data"] and s["in_data"]["malicious_user_days"]) for s in report["scenarios"]] == [
        ("after_hours_usb_leak", None),
        ("job_search_usb", 0),
    ]
    seeker_row = next(line for line in table.stdout.splitlines() if line.startswith("│ job_search_usb "))
    cells = [cell.strip() for cell in seeker_row.split("│")[1:-1]]
    assert cells == ["job_search_usb", "0/1", "3", "0.0%", "0.00", "0", "-", "-"]  # no day with an act in the files


def test_labels_may_say_which_kinds_of_record_their_acts_are_in(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"person": "a", "start": "2024-03-04T09:00:00Z", "end": "2024-03-04T10:00:00Z", "kinds": ["HTTP", "device"]},
        {"person": "b", "start": "2024-03-04T09:00:00Z", "end": "2024-03-04T10:00:00Z", "kinds": "email; file"},
        {"person": "c", "start": "2024-03-04T09:00:00Z", "end": "2024-03-04T10:00:00Z"},
    ]
    (tmp_path / "labels.json").write_bytes(orjson.dumps(rows))
    got = [sorted(label.kinds) for label in load_labels(tmp_path / "labels.json")]
    assert got == [["device", "http"], ["email", "file"], []]
    (tmp_path / "labels.json").write_bytes(orjson.dumps([rows[0] | {"kinds": {"http": 1}}]))
    with pytest.raises(CustodesError, match=r"labels\.json: label #1: kinds \{'http': 1\} is not a list of record"):
        load_labels(tmp_path / "labels.json")


def test_a_cert_csv_line_without_an_end_is_refused_not_read_on(
    cert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSV named as events that never ends a line (`/dev/zero`, a binary file) was read on until memory ran out."""
    monkeypatch.setattr(files, "LONGEST_RECORD", 3 << 20)
    header, first, *_ = (cert / "logon.csv").read_text().splitlines(keepends=True)
    (tmp_path / "logon.csv").write_bytes((header + first).encode() + b"\x00" * (4 << 20))
    settings = ScoringSettings(directory=cert / "LDAP.csv", pseudonymise=False, warmup_days=5)
    with pytest.raises(CustodesError, match=r"logon\.csv: line 3: more than 3 MiB without a line end: not a log"):
        evaluate([tmp_path / "logon.csv"], load_labels(cert / "labels.json"), settings)
