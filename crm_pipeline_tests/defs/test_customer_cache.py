"""Customer 360 files: full and targeted rebuilds, deletions, driven by the sensor."""

import dagster as dg
import pytest
from sqlalchemy import text

from crm_pipeline.cache.customer_index import read_customers, segment_of
from crm_pipeline.cache.stores import LocalFolder
from crm_pipeline.cachefile import read_json
from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.cache.assets import customer_index_cache, customer_profiles_cache
from crm_pipeline.defs.cache.sensors import change_log_sensor
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.demo import seed_demo_crm

ASSETS = [customer_profiles_cache, customer_index_cache, analytics_summary]


@pytest.fixture
def resources(database_url, dirs):
    return {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
    }


def _rebuild(resources, ids=None, selection=None):
    config = {"ops": {"customer_profiles_cache": {"config": {"customer_ids": ids}}}}
    result = dg.materialize(
        ASSETS,
        selection=selection or [customer_profiles_cache],
        resources=resources,
        run_config=config,
    )
    assert result.success
    return result


def _inodes(folder, prefix=""):
    return {prefix + p.name: p.stat().st_ino for p in folder.glob("*.json")}


def test_full_rebuild_writes_a_360_per_customer(clean_db, resources, dirs):
    seed_demo_crm(clean_db)
    with clean_db.begin() as conn:
        cid = conn.execute(text("SELECT min(id) FROM customers")).scalar_one()
        conn.execute(text("UPDATE customers SET fb_psid = 'p1' WHERE id = :c"), {"c": cid})
        conn.execute(
            text(
                "INSERT INTO conversations (id, page_id, psid, customer_id)"
                " VALUES ('t_1', '2001', 'p1', :c)"
            ),
            {"c": cid},
        )
        conn.execute(
            text(
                "INSERT INTO messages (id, conversation_id, text, created_time)"
                " VALUES ('m_1', 't_1', 'hello', now())"
            )
        )
        conn.execute(
            text(
                "INSERT INTO leads (id, email, customer_id, created_time)"
                " VALUES ('l1', 'x@y.z', :c, now())"
            ),
            {"c": cid},
        )
        n, orders = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM customers),"
                " (SELECT count(*) FROM orders WHERE customer_id = :c)"
            ),
            {"c": cid},
        ).one()
    _rebuild(resources, selection=[customer_profiles_cache, customer_index_cache])
    folder = dirs["cache"] / "customers"
    profiles = [p for p in folder.glob("*.json") if p.stem.isdigit()]
    assert len(profiles) == n
    doc = read_json(folder / f"{cid}.json")
    assert {
        "customer",
        "leads",
        "conversations",
        "orders",
        "generated_at",
        "watermark",
        "schema_version",
    } <= doc.keys()
    assert doc["customer"]["id"] == cid
    assert len(doc["orders"]) == orders
    assert doc["conversations"][0]["messages"][0]["text"] == "hello"
    assert [lead["id"] for lead in doc["leads"]] == ["l1"]
    manifest = read_json(folder / "index.json")
    assert manifest["count"] == n
    assert [c["id"] for c in read_customers(LocalFolder(dirs["cache"]))] == sorted(
        int(p.stem) for p in profiles
    )


def test_targeted_rebuild_touches_only_the_changed_customers(clean_db, resources, dirs):
    seed_demo_crm(clean_db)
    _rebuild(resources)
    folder = dirs["cache"] / "customers"
    before = _inodes(folder)
    with clean_db.begin() as conn:
        ids = conn.execute(text("SELECT id FROM customers ORDER BY id LIMIT 2")).scalars().all()
        conn.execute(text("UPDATE customers SET tier = 'platinum' WHERE id = ANY(:i)"), {"i": ids})
    result = _rebuild(resources, ids=ids)
    after = _inodes(folder)
    rewritten = {name for name in after if after[name] != before.get(name)}
    assert rewritten == {f"{i}.json" for i in ids}
    assert read_json(folder / f"{ids[0]}.json")["customer"]["tier"] == "platinum"
    meta = result.asset_materializations_for_node("customer_profiles_cache")[0].metadata
    assert meta["files"].value == 2 and meta["mode"].value == "targeted"


def test_deleted_customers_lose_their_file(clean_db, resources, dirs):
    with clean_db.begin() as conn:
        gone, stays = (
            conn.execute(
                text("INSERT INTO customers (email) VALUES (:e) RETURNING id"), {"e": e}
            ).scalar_one()
            for e in ("gone@x.io", "stays@x.io")
        )
    _rebuild(resources)
    folder = dirs["cache"] / "customers"
    assert (folder / f"{gone}.json").exists()
    with clean_db.begin() as conn:
        conn.execute(text("DELETE FROM customers WHERE id = :g"), {"g": gone})
    _rebuild(resources, ids=[gone])
    assert not (folder / f"{gone}.json").exists()
    assert (folder / f"{stays}.json").exists()
    (folder / "999999.json").write_text("{}")  # a leftover from an older database
    _rebuild(resources)
    assert not (folder / "999999.json").exists()


def test_sensor_request_drives_a_targeted_run(clean_db, resources, dirs, database_url):
    seed_demo_crm(clean_db)
    _rebuild(resources, selection=[customer_profiles_cache, customer_index_cache])
    folder = dirs["cache"] / "customers"
    with dg.build_sensor_context(resources={"postgres": resources["postgres"]}) as ctx:
        cursor = change_log_sensor(ctx).cursor
    before = {**_inodes(folder), **_inodes(folder / "index", "index/")}
    with clean_db.begin() as conn:
        cid = conn.execute(text("SELECT max(id) FROM customers")).scalar_one()
        conn.execute(
            text(
                "INSERT INTO orders (external_id, customer_id, amount) VALUES ('NEW-1', :c, 99.50)"
            ),
            {"c": cid},
        )
    with dg.build_sensor_context(
        cursor=cursor, resources={"postgres": resources["postgres"]}
    ) as ctx:
        request = change_log_sensor(ctx).run_requests[0]
    result = dg.materialize(
        ASSETS,
        selection=request.asset_selection,
        resources=resources,
        run_config=request.run_config,
    )
    assert result.success
    after = {**_inodes(folder), **_inodes(folder / "index", "index/")}
    segment = f"index/{segment_of(cid)}.json"
    assert {n for n in after if after[n] != before.get(n)} == {
        f"{cid}.json",
        segment,
        "index.json",
    }
    config = request.run_config["ops"]["customer_index_cache"]["config"]
    assert config == {"customer_ids": [cid]}
    assert read_json(folder / segment)["customers"][-1]["orders"] >= 1
    orders = read_json(folder / f"{cid}.json")["orders"]
    assert any(o["external_id"] == "NEW-1" for o in orders)
