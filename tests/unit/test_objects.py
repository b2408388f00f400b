"""The typed views of models/objects.py read what the API sent, and read a misshapen part (a status a
runner wrote oddly) as absent instead of failing the reconcile that reads it."""
from gigafactory.models import objects

JOB = {
    "metadata": {"name": "j", "namespace": "team", "labels": {"a": "1"}, "finalizers": ["gigafactory.dev/cleanup"]},
    "spec": {"repo": {"url": "https://example.invalid/r.git"}},
    "status": {"phase": "Running", "assignment": {"pod": "p", "factory": "f"},
               "conditions": [{"type": "Scheduled", "status": "True"}, {"type": "Running", "status": "True", "reason": "Started"}]},
}


def test_views_read_the_parts_of_an_object():
    assert objects.meta(JOB)["name"] == "j" and objects.labels(JOB) == {"a": "1"}
    assert objects.finalizers(JOB) == ["gigafactory.dev/cleanup"]
    assert objects.field(JOB, "spec", "repo")["url"].startswith("https://")
    assert objects.field(JOB, "status", "assignment") == {"pod": "p", "factory": "f"}
    assert [c["type"] for c in objects.conditions(JOB)] == ["Scheduled", "Running"]
    assert (objects.condition(JOB, "Running") or {}).get("reason") == "Started"
    assert objects.condition(JOB, "Complete") is None


def test_missing_or_misshapen_parts_read_as_empty():
    odd = {"metadata": ["not", "an", "object"], "status": "Running",
           "data": None, "spec": {"repo": "a string where an object belongs"}}
    assert objects.meta(odd) == {} and objects.labels(odd) == {} and objects.annotations(odd) == {}
    assert objects.status(odd) == {} and objects.conditions(odd) == [] and objects.condition(odd, "Running") is None
    assert objects.field(odd, "spec", "repo", "url") == {} and objects.data(odd) == {}
    assert objects.finalizers({"metadata": {"finalizers": ["a", 3, None]}}) == ["a"]
    assert objects.conditions({"status": {"conditions": [{"type": "A"}, "junk", 7]}}) == [{"type": "A"}]
    assert objects.text({"output": 12}, "output") == "" and objects.text({"output": "ok"}, "output") == "ok"


def test_views_are_the_objects_themselves_not_copies():
    body = {"status": {"phase": "Pending"}}
    objects.status(body)["phase"] = "Running"
    assert body["status"]["phase"] == "Running"
