"""A Python service instrumented with the standard OpenTelemetry SDK and its OTLP/HTTP exporters, configured only
through the standard OTEL_* environment variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
OTEL_EXPORTER_OTLP_COMPRESSION, OTEL_SERVICE_NAME), as an operator would point it at selfmon.

It handles one chat message: a server span for the request with the user on it, a database call, an AI call with
the GenAI semantic-convention attributes, a log line inside the AI call (through the SDK's logging handler, so it
carries the trace and span ids), and a failing reply with a recorded exception. Prints the trace id and the span
ids as JSON.
"""

import json
import logging

from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

tracer_provider = TracerProvider()
tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(tracer_provider)

logger_provider = LoggerProvider()
logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
set_logger_provider(logger_provider)
log = logging.getLogger("coach.ai")
log.setLevel(logging.INFO)
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))

tracer = trace.get_tracer("coach.handlers")
ids = {}
with tracer.start_as_current_span("handle_message", kind=SpanKind.SERVER) as root:
    root.set_attribute("enduser.id", "tg:777001")
    root.set_attribute("messaging.system", "telegram")
    ids["trace_id"] = format(root.get_span_context().trace_id, "032x")
    ids["root"] = format(root.get_span_context().span_id, "016x")
    with tracer.start_as_current_span("SELECT messages", kind=SpanKind.CLIENT) as db:
        db.set_attribute("db.system", "postgresql")
        ids["db"] = format(db.get_span_context().span_id, "016x")
    with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as ai:
        ai.set_attribute("gen_ai.system", "openai")
        ai.set_attribute("gen_ai.request.model", "gpt-4o-mini")
        ai.set_attribute("gen_ai.response.model", "gpt-4o-mini-2024-07-18")
        ai.set_attribute("gen_ai.usage.input_tokens", 1500)
        ai.set_attribute("gen_ai.usage.output_tokens", 400)
        ids["ai"] = format(ai.get_span_context().span_id, "016x")
        log.warning("Slow AI reply for anna.k@example.com", extra={"latency_ms": 2300})
    with tracer.start_as_current_span("send_reply", kind=SpanKind.CLIENT) as reply:
        ids["reply"] = format(reply.get_span_context().span_id, "016x")
        try:
            raise TimeoutError("Telegram did not answer")
        except TimeoutError as error:
            reply.record_exception(error)
            reply.set_status(Status(StatusCode.ERROR, "reply failed"))

tracer_provider.force_flush()
logger_provider.force_flush()
tracer_provider.shutdown()
logger_provider.shutdown()
print(json.dumps(ids))
