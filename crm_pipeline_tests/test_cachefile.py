import threading
from decimal import Decimal

import orjson
import pytest

from crm_pipeline.cachefile import envelope, read_json, write_json_atomic


def test_envelope_and_exact_decimals(tmp_path):
    path = tmp_path / "a" / "b.json"
    write_json_atomic(path, envelope({"spend": Decimal("12.30")}, watermark="7", schema_version=1))
    doc = read_json(path)
    assert doc["watermark"] == "7" and doc["schema_version"] == 1 and doc["generated_at"]
    assert b"12.30" in path.read_bytes()
    assert not [p for p in path.parent.iterdir() if p.name != "b.json"], "temp file left behind"
    with pytest.raises(ValueError):
        envelope({"watermark": 1}, watermark="1", schema_version=1)


def test_readers_never_see_a_torn_file(tmp_path):
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"n": 0, "pad": ""})
    stop = threading.Event()
    errors: list[Exception] = []

    def reader():
        while not stop.is_set():
            try:
                orjson.loads(path.read_bytes())
            except Exception as exc:  # noqa: BLE001 - any parse error is the failure we look for
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(
        300
    ):  # large, changing documents make a torn read likely if writes were not atomic
        write_json_atomic(path, {"n": i, "pad": "x" * (50_000 + i * 97)})
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert read_json(path)["n"] == 299


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.json"
    write_json_atomic(path, {"ok": True})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert read_json(path) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
