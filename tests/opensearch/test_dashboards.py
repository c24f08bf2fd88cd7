"""The shipped OpenSearch Dashboards saved objects and index templates,
checked structurally (Dashboards itself runs only in docker-compose): every
line is a saved object, references resolve, and every field a visualisation
aggregates exists in the trip_statistics template with a type that the
aggregation accepts. Then the template and real statistics documents on the
real server: sluice indexes them with `id_field`, mappings as declared."""

from __future__ import annotations

import json
from pathlib import Path

from sluice_e2e import REPO

OS_DIR = REPO / "pipelines/opensearch"
NDJSON = OS_DIR / "dashboards.ndjson"
STATS_TEMPLATE = OS_DIR / "trip_statistics.template.json"

# Field types each aggregation needs.
NUMERIC = {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float"}
AGG_TYPES = {"sum": NUMERIC, "avg": NUMERIC, "max": NUMERIC, "min": NUMERIC, "histogram": NUMERIC,
             "date_histogram": {"date"}, "terms": {"keyword"} | NUMERIC, "geohash_grid": {"geo_point"}}


def objects() -> list[dict]:
    lines = [l for l in NDJSON.read_text().splitlines() if l.strip()]
    return [json.loads(l) for l in lines]


def stats_properties() -> dict:
    return json.loads(STATS_TEMPLATE.read_text())["template"]["mappings"]["properties"]


def test_saved_objects_are_well_formed_and_references_resolve():
    objs = objects()
    by_key = {(o["type"], o["id"]): o for o in objs}
    assert len(by_key) == len(objs), "ids are unique per type"
    kinds = [o["type"] for o in objs]
    assert kinds.count("index-pattern") == 1 and kinds.count("visualization") == 4 and kinds.count("dashboard") == 1
    for o in objs:
        assert set(o) >= {"id", "type", "attributes", "references"}, o
        assert o["attributes"]["title"], o
        for r in o["references"]:
            assert (r["type"], r["id"]) in by_key, f"{o['id']} refers to missing {r}"
        if o["type"] == "visualization":
            search = json.loads(o["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
            names = {r["name"] for r in o["references"]}
            assert search["indexRefName"] in names, o["id"]
        if o["type"] == "dashboard":
            panels = json.loads(o["attributes"]["panelsJSON"])
            names = {r["name"] for r in o["references"]}
            assert {p["panelRefName"] for p in panels} == names
    ip = next(o for o in objs if o["type"] == "index-pattern")
    template = json.loads(STATS_TEMPLATE.read_text())
    pattern = ip["attributes"]["title"]
    assert pattern in template["index_patterns"], (pattern, template["index_patterns"])
    assert ip["attributes"]["timeFieldName"] in stats_properties()


def test_visualisations_use_fields_the_template_declares():
    props = stats_properties()
    titles = set()
    for o in objects():
        if o["type"] != "visualization":
            continue
        titles.add(o["attributes"]["title"])
        state = json.loads(o["attributes"]["visState"])
        assert state["title"] == o["attributes"]["title"]
        for agg in state["aggs"]:
            field = agg["params"].get("field")
            if field is None:
                assert agg["type"] == "count", agg
                continue
            assert field in props, f"{o['id']}: field {field} is not in the template"
            assert props[field]["type"] in AGG_TYPES[agg["type"]], (o["id"], agg["type"], field, props[field])
    assert titles == {"Trips per minute per vendor", "Average trip duration", "Peak pickup hours",
                      "Masked pickup locations"}


def test_shipped_templates_are_valid_json_templates():
    for t in OS_DIR.glob("*.template.json"):
        body = json.loads(t.read_text())
        assert body["index_patterns"], t
        assert body["template"]["mappings"]["properties"], t


def stats_docs(n: int) -> list[dict]:
    docs = []
    for i in range(n):
        m = i % 60
        vendor = ["1", "2"][i % 2]
        docs.append({
            "id": f"2016-01-01T00:{m:02d}:00Z|{vendor}|{i}",
            "window_start": f"2016-01-01T00:{m:02d}:00Z", "window_end": f"2016-01-01T00:{m:02d}:59.999Z",
            "vendor_id": vendor, "trip_count": 10 + i, "passenger_count": 12 + i,
            "total_duration_s": 600.0 * (10 + i), "avg_duration_s": 600.0, "avg_distance": 2.5,
            "peak_pickup_hour": i % 24, "pickup_location": {"lat": 40.75, "lon": -73.98},
            "anomaly_score": 0.1})
    return docs


def test_statistics_documents_are_indexed_exactly_with_the_shipped_template(sluice, opensearch, index, tmp_path):
    from test_opensearch_sink import pipeline, write_ndjson

    # The shipped template, aimed at this test's own index name.
    body = json.loads(STATS_TEMPLATE.read_text())
    body["index_patterns"] = [f"{index}*"]
    template = tmp_path / "stats.template.json"
    template.write_text(json.dumps(body))
    docs = stats_docs(150)
    src = tmp_path / "stats.ndjson"
    write_ndjson(src, docs)
    p = pipeline(tmp_path, source=f'type = "file"\npath = "{src}"',
                 sink=f'endpoints = ["{opensearch.endpoint}"]\nindex = "{index}-{{window_start:%Y.%m}}"\n'
                      f'id_field = "id"\ntemplate = "{template}"\ntemplate_name = "{index}"')
    sluice.run(p)
    # Replaying the same statistics (a restart from scratch) overwrites them.
    (tmp_path / "cp" / "checkpoint.json").unlink()
    sluice.run(p)
    got = opensearch.docs(f"{index}-*")
    assert set(got) == {d["id"] for d in docs}
    assert {v["_index"] for v in got.values()} == {f"{index}-2016.01"}
    props = opensearch.mapping(f"{index}-2016.01")[f"{index}-2016.01"]["mappings"]["properties"]
    assert {k: v["type"] for k, v in props.items()} == {k: v["type"] for k, v in stats_properties().items()}
    # The first visualisation's aggregation answers on the real data.
    r = opensearch.req("POST", f"/{index}-*/_search", {"size": 0, "aggs": {"v": {"terms": {"field": "vendor_id"},
                       "aggs": {"t": {"sum": {"field": "trip_count"}}}}}})
    sums = {b["key"]: b["t"]["value"] for b in r["aggregations"]["v"]["buckets"]}
    assert sums == {v: float(sum(d["trip_count"] for d in docs if d["vendor_id"] == v)) for v in ("1", "2")}
