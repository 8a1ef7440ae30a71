"""Validates OCSF events (one JSON object per line on stdin) with third-party
validators from PyPI:

- py-ocsf-models (DetectionFinding, OCSF 1.x Pydantic models): required attributes,
  enums and types of the finding class; for the classes it has no model of
  (Application Lifecycle, Software Inventory Info) its base event model (its Device
  model requires `ip`, `name` and `region`, which OCSF does not: not used);
- pydantic-ocsf (every class and object of the OCSF 1.7.0 schema it ships, the
  newest it has; 1.8.0 only adds to it): nested objects
  (process, parent_process, device, evidences, endpoints...) are validated too, and
  any attribute the schema does not know is an error unless it sits under `unmapped`.
  Profiles: pydantic-ocsf models classes without their profiles' attributes, so
  `device` and `actor` that the `host` profile (listed in `metadata.profiles`) adds
  to any class are validated as objects of their own.

Exit status 0 when every event passes; 1 with one line per problem otherwise.
"""

import json
import sys

from pydantic import BaseModel
from py_ocsf_models.events.base_event import BaseEvent as PyOcsfBaseEvent
from py_ocsf_models.events.findings.detection_finding import DetectionFinding as PyOcsfDetectionFinding
from ocsf.v1_7_0 import events as ocsf_events
from ocsf.v1_7_0 import objects as ocsf_objects


def unknown_attributes(model, path="$"):
    """Attributes pydantic-ocsf kept as extras: names the schema does not define."""
    found = []
    if not isinstance(model, BaseModel):
        if isinstance(model, list):
            for i, item in enumerate(model):
                found += unknown_attributes(item, f"{path}[{i}]")
        return found
    for name in (model.model_extra or {}):
        found.append(f"{path}.{name}")
    for name in type(model).model_fields:
        if name == "unmapped":
            continue
        found += unknown_attributes(getattr(model, name), f"{path}.{name}")
    return found


CLASSES = {
    2004: ("DetectionFinding", True),
    1007: ("ProcessActivity", False),
    1001: ("FileActivity", False),
    4001: ("NetworkActivity", False),
    6002: ("ApplicationLifecycle", False),
    6003: ("ApiActivity", False),
    5020: ("SoftwareInfo", False),
}

# Attributes the `host` profile adds to every class (OCSF 1.8.0 profiles/host.json).
HOST_PROFILE = {"device": "Device", "actor": "Actor"}

# The `ai_operation` profile (OCSF 1.8.0) is newer than pydantic-ocsf's 1.7.0 schema:
# its `message_context` object is checked against the 1.8.0 definition
# (objects/message_context.json), its `service` as the Service object.
MESSAGE_CONTEXT_1_8_0 = {
    "ai_role", "ai_role_id", "application", "completion_tokens", "name",
    "prompt_tokens", "service", "total_tokens", "uid",
}


def message_context_problems(event):
    mc = event.get("message_context")
    if mc is None:
        return []
    problems = []
    if "ai_operation" not in (event.get("metadata", {}).get("profiles") or []):
        problems.append("message_context without the ai_operation profile in metadata.profiles")
    if not isinstance(mc, dict):
        return problems + ["message_context is not an object"]
    problems += [f"unknown attribute $.message_context.{k}" for k in mc if k not in MESSAGE_CONTEXT_1_8_0]
    if "application" not in mc and "service" not in mc:
        problems.append("message_context needs application or service")
    if mc.get("ai_role_id", 0) not in (0, 1, 2, 3, 4, 5, 6, 99):
        problems.append("message_context.ai_role_id out of range")
    if "service" in mc:
        try:
            m = ocsf_objects.Service.model_validate(mc["service"])
            problems += [f"unknown attribute {p}" for p in unknown_attributes(m, "$.message_context.service")]
        except Exception as e:
            problems.append(f"pydantic-ocsf message_context.service: {e}")
    return problems


def profile_attributes(event, model_cls):
    """Splits off the host profile's attributes the class model does not declare:
    (event without them, [(name, object model name, value)], problems)."""
    rest, extra, problems = dict(event), [], []
    profiles = event.get("metadata", {}).get("profiles") or []
    for attr, obj in HOST_PROFILE.items():
        if attr in event and attr not in model_cls.model_fields:
            if "host" not in profiles:
                problems.append(f"{attr} without the host profile in metadata.profiles")
            extra.append((attr, obj, rest.pop(attr)))
    return rest, extra, problems


def check(event):
    problems = []
    cls = event.get("class_uid")
    if cls not in CLASSES:
        return [f"class_uid {cls!r} is not one mcpwatch emits"]
    name, py_ocsf = CLASSES[cls]
    if event.get("metadata", {}).get("version") != "1.8.0":
        problems.append("metadata.version is not 1.8.0")
    if event.get("type_uid") != cls * 100 + event.get("activity_id", -1):
        problems.append("type_uid != class_uid * 100 + activity_id")
    try:
        if py_ocsf:
            PyOcsfDetectionFinding.model_validate(event)
        else:
            PyOcsfBaseEvent.model_validate(event)
    except Exception as e:  # pydantic.ValidationError
        problems.append(f"py-ocsf-models: {e}")
    model_cls = getattr(ocsf_events, name)
    problems += message_context_problems(event)
    event = {k: v for k, v in event.items() if k != "message_context"}
    rest, extra, profile_problems = profile_attributes(event, model_cls)
    problems += profile_problems
    try:
        model = model_cls.model_validate(rest)
        problems += [f"unknown attribute {p}" for p in unknown_attributes(model)]
    except Exception as e:
        problems.append(f"pydantic-ocsf: {e}")
    for attr, obj, value in extra:
        try:
            m = getattr(ocsf_objects, obj).model_validate(value)
            problems += [f"unknown attribute {p}" for p in unknown_attributes(m, f"$.{attr}")]
        except Exception as e:
            problems.append(f"pydantic-ocsf {attr}: {e}")
    return problems


def main():
    failed = 0
    n = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        n += 1
        event = json.loads(line)
        for p in check(event):
            failed += 1
            uid = event.get("finding_info", {}).get("uid") or event.get("metadata", {}).get("uid")
            print(f"event {n} ({uid}): {p}")
    if n == 0:
        print("no events to validate")
        return 1
    print(f"{n} events validated, {failed} problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
