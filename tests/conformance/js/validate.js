// Reads the CloudEvents the beats produced with the official JavaScript SDK (npm `cloudevents`).
//
// Input: a JSON file (argv[2]) holding a list of records {"via": "sse"|"kafka", "value": <the
// structured-mode JSON text>, "key": <Kafka key or null>, "headers": {<Kafka headers>}}.
// Every record is read three ways: `new CloudEvent(parsed)` (strict: the SDK's JSON schema, the
// attribute names, the extension value types), `HTTP.toEvent` of a structured-mode HTTP message,
// and, for Kafka records, `Kafka.toEvent` of the record as the broker delivered it (structured
// mode by its content-type header), then `validate()`. Output (stdout): a JSON list, one entry
// per record: {"ok": true, "id", "type", "time", "datacontenttype"} or {"ok": false, "error"}.
// Exit status 0 when the input was read, whatever the verdicts.
"use strict";

const fs = require("fs");
const { CloudEvent, HTTP, Kafka } = require("cloudevents");

function describe(event) {
  return {
    ok: true,
    id: event.id,
    type: event.type,
    time: event.time,
    datacontenttype: event.datacontenttype,
  };
}

function check(record) {
  const parsed = JSON.parse(record.value);
  const strict = new CloudEvent(parsed);
  const http = HTTP.toEvent({
    headers: { "content-type": "application/cloudevents+json" },
    body: record.value,
  });
  http.validate();
  if (http.id !== strict.id || http.datacontenttype !== strict.datacontenttype) {
    throw new Error("HTTP.toEvent read other attributes than the event has");
  }
  if (record.via !== "kafka") {
    return describe(strict);
  }
  const kafka = Kafka.toEvent({
    headers: record.headers,
    key: record.key,
    value: record.value,
  });
  kafka.validate();
  if (kafka.id !== strict.id || kafka.datacontenttype !== strict.datacontenttype) {
    throw new Error("Kafka.toEvent read other attributes than the event has");
  }
  return describe(kafka);
}

const records = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const verdicts = records.map((record) => {
  try {
    return check(record);
  } catch (error) {
    return { ok: false, error: `${error.name}: ${error.message}` };
  }
});
process.stdout.write(JSON.stringify(verdicts));
