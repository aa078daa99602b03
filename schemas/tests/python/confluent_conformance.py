"""Confluent's Python client (confluent-kafka) against brook's registry.

Usage: confluent_conformance.py URL RUST_V2_PAYLOAD_HEX

Registers, evolves, checks compatibility, sets levels, looks up, deletes,
and serializes/deserializes through the registry with Confluent's own
AvroSerializer/AvroDeserializer; decodes a payload brook's Rust serde wrote
and prints one it wrote itself (for brook to decode). Every check is an
assert; the last line printed is a JSON summary.
"""

import json
import pathlib
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

url, rust_payload_hex = sys.argv[1], sys.argv[2]
subjects_dir = pathlib.Path(__file__).resolve().parents[2] / "subjects"
V1 = (subjects_dir / "ecommerce-events-value" / "v1.avsc").read_text()
V2 = (subjects_dir / "ecommerce-events-value" / "v2.avsc").read_text()
BREAKING = json.loads(V1)
for field in BREAKING["fields"]:
    if field["name"] == "session_id":
        field["type"] = "int"
BREAKING = json.dumps(BREAKING)

TOPIC = "py-events"
SUBJECT = TOPIC + "-value"
client = SchemaRegistryClient({"url": url})
ctx = SerializationContext(TOPIC, MessageField.VALUE)


def expect_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except SchemaRegistryError as e:
        assert e.error_code == code, (code, e.error_code, e.error_message)
        assert e.http_status_code == int(str(code)[:3]), e.http_status_code
        return e.error_message
    raise AssertionError(f"expected error {code}")


# Register, read back, look up.
id1 = client.register_schema(SUBJECT, Schema(V1, "AVRO"))
latest = client.get_latest_version(SUBJECT)
assert latest.version == 1 and latest.schema_id == id1, latest
assert json.loads(latest.schema.schema_str) == json.loads(V1)
assert json.loads(client.get_schema(id1).schema_str) == json.loads(V1)
found = client.lookup_schema(SUBJECT, Schema(V1, "AVRO"))
assert found.version == 1 and found.schema_id == id1
assert SUBJECT in client.get_subjects()

# Compatibility checks and levels.
assert client.get_compatibility() == "BACKWARD"
assert client.test_compatibility(SUBJECT, Schema(V2, "AVRO")) is True
assert client.test_compatibility(SUBJECT, Schema(BREAKING, "AVRO")) is False
assert client.test_compatibility_all_versions(SUBJECT, Schema(V2, "AVRO")) is True
client.set_compatibility(SUBJECT, "FULL")
assert client.get_compatibility(SUBJECT) == "FULL"
message = expect_error(409, client.register_schema, SUBJECT, Schema(BREAKING, "AVRO"))
assert "session_id" in message, message
expect_error(42201, client.register_schema, SUBJECT, Schema('{"type": "nope"}', "AVRO"))
expect_error(40401, client.get_latest_version, "no-such-subject")
expect_error(40403, client.get_schema, 9999)

# Evolve to v2.
id2 = client.register_schema(SUBJECT, Schema(V2, "AVRO"))
assert id2 != id1
assert client.get_versions(SUBJECT) == [1, 2]

# Confluent's serializers: a v1 and a v2 producer, readers of both versions.
ser1 = AvroSerializer(client, V1)
ser2 = AvroSerializer(client, V2)
e1 = {"event_id": "p1", "user_id": "user_0001", "event_type": "PAGE_VIEW",
      "timestamp": 1700000000000, "session_id": "s1"}
e2 = dict(e1, event_id="p2", product_id="P-1", product_name="Kettle", price=39.5,
          category="Home", device_type="TABLET", country="NL")
b1, b2 = ser1(e1, ctx), ser2(e2, ctx)
assert b1[0] == 0 and int.from_bytes(b1[1:5], "big") == id1, b1[:5]
assert int.from_bytes(b2[1:5], "big") == id2
as_v2 = AvroDeserializer(client, V2)
as_v1 = AvroDeserializer(client, V1)
as_writer = AvroDeserializer(client)
read = as_v2(b1, ctx)
assert read["session_id"] == "s1" and read["country"] is None and read["price"] is None, read
assert as_v2(b2, ctx) == e2
assert as_v1(b2, ctx) == e1 | {"event_id": "p2"}
assert as_writer(b2, ctx) == e2

# brook's bytes (a v2 event written by the Rust serde on subject
# ecommerce-events-value) read by Confluent's deserializer, as v1 and v2.
rust = bytes.fromhex(rust_payload_hex)
rust_ctx = SerializationContext("ecommerce-events", MessageField.VALUE)
from_rust = as_v2(rust, rust_ctx)
assert from_rust["event_id"] == "rust-1" and from_rust["device_type"] == "MOBILE", from_rust
assert "country" not in as_v1(rust, rust_ctx)

# A payload for brook to read: v1 written by Confluent's serializer on the
# subject brook's test uses.
py_payload = AvroSerializer(client, V1)(dict(e1, event_id="python-1"),
                                      SerializationContext("ecommerce-events", MessageField.VALUE))

# Deletes: soft, then permanent; soft-deleted ids still resolve.
assert client.delete_version(SUBJECT, 2) == 2
assert client.get_versions(SUBJECT) == [1]
assert json.loads(client.get_schema(id2).schema_str) == json.loads(V2)
assert client.delete_subject(SUBJECT) == [1]
assert SUBJECT not in client.get_subjects()
assert client.delete_subject(SUBJECT, permanent=True) == [1, 2]
expect_error(40401, client.get_versions, SUBJECT)

print(json.dumps({"ok": True, "id1": id1, "id2": id2, "python_payload": py_payload.hex(),
                  "from_rust": from_rust}))
