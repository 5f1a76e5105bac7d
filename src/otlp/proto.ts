/**
 * The subset of opentelemetry-proto that OTLP/HTTP trace export needs, parsed once (on first
 * use) with protobufjs from the .proto text below.
 *
 * Field numbers and types are the official ones, copied from open-telemetry/opentelemetry-proto:
 * - `opentelemetry/proto/common/v1/common.proto` — AnyValue (string 1, bool 2, int64 3,
 *   double 4, array 5, kvlist 6, bytes 7), ArrayValue, KeyValueList, KeyValue (key 1, value 2),
 *   InstrumentationScope (name 1, version 2, attributes 3, dropped_attributes_count 4)
 * - `opentelemetry/proto/resource/v1/resource.proto` — Resource (attributes 1, dropped 2)
 * - `opentelemetry/proto/trace/v1/trace.proto` — ResourceSpans (resource 1, scope_spans 2,
 *   schema_url 3), ScopeSpans (scope 1, spans 2, schema_url 3), Span (trace_id 1, span_id 2,
 *   trace_state 3, parent_span_id 4, name 5, kind 6, start 7 and end 8 as fixed64,
 *   attributes 9, dropped_attributes_count 10, events 11, dropped_events_count 12, links 13,
 *   dropped_links_count 14, status 15, flags 16 as fixed32), Status (message 2, code 3; 1 is
 *   reserved)
 * - `opentelemetry/proto/collector/trace/v1/trace_service.proto` — ExportTraceServiceRequest
 *   (resource_spans 1), ExportTraceServiceResponse (partial_success 1),
 *   ExportTracePartialSuccess (rejected_spans 1 as int64, error_message 2)
 *
 * Fields we never read (links, span events, entity refs, …) are either declared with their real
 * type, so a well-formed message decodes, or simply absent: protobuf skips unknown fields, so
 * newer senders stay readable.
 */
import { createRequire } from 'node:module'
import type { Type } from 'protobufjs'

const OTLP_TRACES_PROTO = `
syntax = "proto3";
package llmscope.otlp;

message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
    ArrayValue array_value = 5;
    KeyValueList kvlist_value = 6;
    bytes bytes_value = 7;
  }
}
message ArrayValue { repeated AnyValue values = 1; }
message KeyValueList { repeated KeyValue values = 1; }
message KeyValue {
  string key = 1;
  AnyValue value = 2;
}
message InstrumentationScope {
  string name = 1;
  string version = 2;
  repeated KeyValue attributes = 3;
  uint32 dropped_attributes_count = 4;
}
message Resource {
  repeated KeyValue attributes = 1;
  uint32 dropped_attributes_count = 2;
}
message ResourceSpans {
  Resource resource = 1;
  repeated ScopeSpans scope_spans = 2;
  string schema_url = 3;
}
message ScopeSpans {
  InstrumentationScope scope = 1;
  repeated Span spans = 2;
  string schema_url = 3;
}
message Span {
  bytes trace_id = 1;
  bytes span_id = 2;
  string trace_state = 3;
  bytes parent_span_id = 4;
  fixed32 flags = 16;
  string name = 5;
  int32 kind = 6;
  fixed64 start_time_unix_nano = 7;
  fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9;
  uint32 dropped_attributes_count = 10;
  message Event {
    fixed64 time_unix_nano = 1;
    string name = 2;
    repeated KeyValue attributes = 3;
    uint32 dropped_attributes_count = 4;
  }
  repeated Event events = 11;
  uint32 dropped_events_count = 12;
  message Link {
    bytes trace_id = 1;
    bytes span_id = 2;
    string trace_state = 3;
    repeated KeyValue attributes = 4;
    uint32 dropped_attributes_count = 5;
    fixed32 flags = 6;
  }
  repeated Link links = 13;
  uint32 dropped_links_count = 14;
  Status status = 15;
}
message Status {
  reserved 1;
  string message = 2;
  int32 code = 3;
}
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
message ExportTraceServiceResponse { ExportTracePartialSuccess partial_success = 1; }
message ExportTracePartialSuccess {
  int64 rejected_spans = 1;
  string error_message = 2;
}
`
// SpanKind and StatusCode are enums in the official files; an enum is an int32 varint on the
// wire, so declaring them int32 reads the same bytes and keeps unknown future values as numbers.

/**
 * The message types, made on first use: protobufjs (36 files) and the parse of the text above
 * are left out of every start (tens of ms of module loading before a restart can restore) and
 * paid by the first OTLP protobuf request instead. protobufjs is CommonJS, so it loads
 * synchronously and every function here stays synchronous.
 */
let types: { Request: Type; Response: Type } | null = null
function typesOf(): { Request: Type; Response: Type } {
  if (types === null) {
    const protobuf = createRequire(import.meta.url)('protobufjs') as typeof import('protobufjs')
    const root = protobuf.parse(OTLP_TRACES_PROTO, { keepCase: false }).root
    types = { Request: root.lookupType('llmscope.otlp.ExportTraceServiceRequest'), Response: root.lookupType('llmscope.otlp.ExportTraceServiceResponse') }
  }
  return types
}

/**
 * Decodes an ExportTraceServiceRequest into plain objects shaped like OTLP/JSON (lowerCamelCase
 * keys, int64/fixed64 as decimal strings, enums as numbers), except that ids stay bytes
 * (Uint8Array) instead of hex. Throws on malformed input.
 */
export function decodeTraceRequest(bytes: Uint8Array): Record<string, unknown> {
  const { Request } = typesOf()
  const message = Request.decode(bytes)
  return Request.toObject(message, { longs: String, enums: Number, defaults: false, arrays: false }) as Record<string, unknown>
}

/** Encodes an ExportTraceServiceResponse; with nothing rejected the message is empty. */
export function encodeTraceResponse(rejectedSpans: number, errorMessage: string): Uint8Array {
  const body = rejectedSpans > 0 || errorMessage !== '' ? { partialSuccess: { rejectedSpans, errorMessage } } : {}
  const { Response } = typesOf()
  return Response.encode(Response.fromObject(body)).finish()
}

/** Decodes an ExportTraceServiceResponse (tests, and clients of ours that speak protobuf). */
export function decodeTraceResponse(bytes: Uint8Array): { partialSuccess?: { rejectedSpans?: string; errorMessage?: string } } {
  const { Response } = typesOf()
  return Response.toObject(Response.decode(bytes), { longs: String, defaults: false }) as { partialSuccess?: { rejectedSpans?: string; errorMessage?: string } }
}

/** Encodes a request from OTLP/JSON-shaped plain objects (ids as Uint8Array). Tests use it. */
export function encodeTraceRequest(request: Record<string, unknown>): Uint8Array {
  const { Request } = typesOf()
  return Request.encode(Request.fromObject(request)).finish()
}
