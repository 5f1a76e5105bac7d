/**
 * Which span attributes feed which event field, in priority order: the first spelling present
 * on a span wins and the others are ignored, so an instrumentation that writes the same number
 * under two names (OpenLIT writes reasoning tokens twice) is never counted twice.
 *
 * Where each spelling comes from:
 * - OTel: the GenAI semantic conventions (`@opentelemetry/semantic-conventions` 1.4x,
 *   `ATTR_GEN_AI_*` in its incubating entry point, now in open-telemetry/semantic-conventions-genai).
 * - OpenLLMetry: traceloop/openllmetry,
 *   `packages/opentelemetry-semantic-conventions-ai/opentelemetry/semconv_ai/__init__.py`
 *   (`SpanAttributes.LLM_USAGE_PROMPT_TOKENS = "gen_ai.usage.prompt_tokens"`,
 *   `LLM_USAGE_COMPLETION_TOKENS`, `LLM_USAGE_CACHE_READ_INPUT_TOKENS =
 *   "gen_ai.usage.cache_read_input_tokens"`, `LLM_USAGE_CACHE_CREATION_INPUT_TOKENS`,
 *   `LLM_USAGE_REASONING_TOKENS = "gen_ai.usage.reasoning_tokens"`, `LLM_USAGE_TOTAL_TOKENS =
 *   "llm.usage.total_tokens"`), and its instrumentations
 *   (`opentelemetry-instrumentation-openai/.../shared/__init__.py`,
 *   `opentelemetry-instrumentation-anthropic/.../__init__.py`).
 * - OpenLIT: openlit/openlit, `sdk/python/src/openlit/semcov/__init__.py`
 *   (`GEN_AI_USAGE_INPUT_TOKENS`, `GEN_AI_USAGE_REASONING_TOKENS =
 *   "gen_ai.usage.reasoning_tokens"`, `GEN_AI_USAGE_TOTAL_TOKENS = "gen_ai.usage.total_tokens"`)
 *   and `sdk/typescript/src/semantic-convention.ts` (`GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS =
 *   "gen_ai.usage.cache_read.input_tokens"`, `..._CACHE_CREATION_... =
 *   "gen_ai.usage.cache_creation.input_tokens"`, `GEN_AI_USAGE_PROMPT_TOKENS_DETAILS_CACHE_READ =
 *   "gen_ai.usage.prompt_tokens_details.cache_read"`, `..._CACHE_WRITE`,
 *   `GEN_AI_USAGE_COMPLETION_TOKENS_DETAILS_REASONING =
 *   "gen_ai.usage.completion_tokens_details.reasoning"`).
 * - Arize OpenInference (Arize-ai/openinference, `spec/semantic_conventions.md`): `llm.model_name`
 *   (`embedding.model_name` on embedding spans), `llm.provider` (who serves it) then
 *   `llm.system`, `llm.token_count.prompt` / `.completion` / `.total`,
 *   `llm.token_count.prompt_details.cache_read` / `.cache_write`,
 *   `llm.token_count.completion_details.reasoning`; read last, and read like the OTel spelling
 *   (the prompt count includes cached tokens: "cache_read … maps to cached_tokens in OpenAI
 *   responses"). Only spans whose `openinference.span.kind` is `LLM` or `EMBEDDING` count.
 * - OpenAI usage shape, flattened: `gen_ai.usage.input_tokens_details.cached_tokens` and
 *   `gen_ai.usage.output_tokens_details.reasoning_tokens` (the Responses API's own field names,
 *   as some agent SDK exporters write them; read last).
 */

/** One event field and the span attributes that may carry it. */
export interface Alias {
  field: string
  attributes: readonly string[]
  note: string
}

export const MODEL_ATTRS = ['gen_ai.response.model', 'gen_ai.request.model', 'llm.model_name', 'embedding.model_name'] as const
export const PROVIDER_ATTRS = ['gen_ai.provider.name', 'gen_ai.system', 'llm.provider', 'llm.system'] as const
export const INPUT_ATTRS = ['gen_ai.usage.input_tokens', 'gen_ai.usage.prompt_tokens', 'llm.token_count.prompt'] as const
export const OUTPUT_ATTRS = ['gen_ai.usage.output_tokens', 'gen_ai.usage.completion_tokens', 'llm.token_count.completion'] as const
export const CACHE_READ_ATTRS = [
  'gen_ai.usage.cache_read.input_tokens',
  'gen_ai.usage.cache_read_input_tokens',
  'gen_ai.usage.prompt_tokens_details.cache_read',
  'gen_ai.usage.input_tokens_details.cached_tokens',
  'llm.token_count.prompt_details.cache_read'
] as const
export const CACHE_WRITE_ATTRS = [
  'gen_ai.usage.cache_creation.input_tokens',
  'gen_ai.usage.cache_creation_input_tokens',
  'gen_ai.usage.prompt_tokens_details.cache_write',
  'llm.token_count.prompt_details.cache_write'
] as const
export const REASONING_ATTRS = [
  'gen_ai.usage.reasoning.output_tokens',
  'gen_ai.usage.reasoning_tokens',
  'gen_ai.usage.completion_tokens_details.reasoning',
  'gen_ai.usage.output_tokens_details.reasoning_tokens',
  'llm.token_count.completion_details.reasoning'
] as const
export const TOTAL_ATTRS = ['llm.usage.total_tokens', 'gen_ai.usage.total_tokens', 'llm.token_count.total'] as const
/** Seconds, as OpenLIT records them on streaming calls. */
export const TTFT_SECONDS_ATTRS = ['gen_ai.response.time_to_first_chunk', 'gen_ai.server.time_to_first_token'] as const

/** The alias table the README publishes (a test keeps the two in step). */
export const ALIASES: readonly Alias[] = [
  { field: 'model', attributes: MODEL_ATTRS, note: 'required: a span without it is not an LLM call' },
  { field: 'provider', attributes: PROVIDER_ATTRS, note: 'mapped to a genai-prices provider id (table below)' },
  { field: 'prompt_tokens', attributes: INPUT_ATTRS, note: 'adjusted for cached tokens (see token conventions)' },
  { field: 'completion_tokens', attributes: OUTPUT_ATTRS, note: 'includes reasoning tokens' },
  { field: 'cached_tokens', attributes: CACHE_READ_ATTRS, note: 'cache reads' },
  { field: 'cache_write_tokens', attributes: CACHE_WRITE_ATTRS, note: 'cache writes, priced at the cache-write rate (see token conventions)' },
  { field: 'reasoning_tokens', attributes: REASONING_ATTRS, note: 'informational: already inside completion_tokens' },
  { field: '(total)', attributes: TOTAL_ATTRS, note: 'read only to tell whether output includes reasoning; total_tokens is recomputed' },
  { field: 'ttft_ms', attributes: TTFT_SECONDS_ATTRS, note: 'seconds × 1000' }
]

/**
 * Dimensions (README: Dimensions): which span attributes become `user_id`, `session_id`, `tags`, and
 * which carry the caller's own metadata. Same rule as above: the first spelling present wins
 * (span attributes first, then the same names on the resource). A value the event schema would
 * refuse is left out, never cut (see `dimensions` in convert.ts); the span is still taken.
 *
 * Where each spelling comes from:
 * - OTel: `user.id` and `session.id` (general registry; `enduser.id` is the deprecated
 *   spelling of `user.id`), `gen_ai.conversation.id` (GenAI spans).
 * - Arize OpenInference (`spec/semantic_conventions.md`): `user.id`, `session.id`, `tag.tags`
 *   (a list of strings), `metadata` (a JSON string of an object).
 * - Langfuse (langfuse/langfuse, `packages/shared/src/server/otel/attributes.ts` and
 *   `OtelIngestionProcessor.ts`, `extractUserId` / `extractSessionId` / `extractTags`): `user.id`
 *   and `session.id` today, `langfuse.user.id` / `langfuse.session.id` kept for compatibility,
 *   `langfuse.trace.tags` / `langfuse.tags` (an array, a JSON array string, or a comma list),
 *   `langfuse.{trace,observation}.metadata.langfuse_{user_id,session_id,tags}`, and metadata
 *   as `langfuse.{trace,observation}.metadata.KEY` / `langfuse.metadata.KEY` or a JSON string.
 * - Vercel AI SDK (`experimental_telemetry.metadata`, as Langfuse reads it):
 *   `ai.telemetry.metadata.userId`, `.sessionId`, `.tags`, other keys as metadata.
 * - OpenLLMetry: `traceloop.association.properties.user_id` / `.session_id` (the SDK's
 *   `AssociationProperty.USER_ID` / `SESSION_ID`; some SDK versions set them unprefixed as
 *   `user_id` / `session_id`, read last), and `llm.user` (`SpanAttributes.LLM_USER`, the OpenAI
 *   request's `user`). Other association properties stay `association.*` metadata.
 * - OpenLIT: `gen_ai.request.user` (`SemanticConvention.GEN_AI_REQUEST_USER`, the OpenAI
 *   request's `user`: the end user).
 *
 * Application-level ids come before the provider request's `user` parameter, and explicit
 * session ids before `gen_ai.conversation.id`:
 *
 * | field        | OTel                                   | OpenInference | Langfuse                                      | Vercel AI SDK                  | OpenLLMetry                                             | OpenLIT               |
 * | ------------ | -------------------------------------- | ------------- | --------------------------------------------- | ------------------------------ | ------------------------------------------------------- | --------------------- |
 * | `user_id`    | `user.id`, `enduser.id`                | `user.id`     | `user.id`, `langfuse.user.id`, `…metadata.langfuse_user_id` | `ai.telemetry.metadata.userId` | `traceloop.association.properties.user_id`, `llm.user`, `user_id` | `gen_ai.request.user` |
 * | `session_id` | `session.id`, `gen_ai.conversation.id` | `session.id`  | `session.id`, `langfuse.session.id`, `…metadata.langfuse_session_id` | `ai.telemetry.metadata.sessionId` | `traceloop.association.properties.session_id`, `session_id` | —          |
 * | `tags`       | —                                      | `tag.tags`    | `langfuse.trace.tags`, `langfuse.tags`, `…metadata.langfuse_tags` | `ai.telemetry.metadata.tags` | —                                                     | —                     |
 * | metadata     | —                                      | `metadata` (JSON) | `langfuse.{trace,observation}.metadata.KEY`, `langfuse.metadata.KEY`, or JSON | `ai.telemetry.metadata.KEY` | `traceloop.association.properties.KEY` → `association.KEY` | — |
 *
 * The arrays below are the priority order (README "OpenTelemetry" publishes them; a test
 * keeps the two in step).
 */
export const USER_ID_ATTRS = [
  'user.id',
  'langfuse.user.id',
  'enduser.id',
  'traceloop.association.properties.user_id',
  'ai.telemetry.metadata.userId',
  'langfuse.trace.metadata.langfuse_user_id',
  'langfuse.observation.metadata.langfuse_user_id',
  'gen_ai.request.user',
  'llm.user',
  'user_id'
] as const
export const SESSION_ID_ATTRS = [
  'session.id',
  'langfuse.session.id',
  'traceloop.association.properties.session_id',
  'ai.telemetry.metadata.sessionId',
  'langfuse.trace.metadata.langfuse_session_id',
  'langfuse.observation.metadata.langfuse_session_id',
  'gen_ai.conversation.id',
  'session_id'
] as const
export const TAGS_ATTRS = [
  'langfuse.trace.tags',
  'langfuse.tags',
  'tag.tags',
  'ai.telemetry.metadata.tags',
  'langfuse.trace.metadata.langfuse_tags',
  'langfuse.observation.metadata.langfuse_tags'
] as const
/** `PREFIX.KEY = scalar` → metadata `KEY` (the dimension attributes above excepted). */
export const METADATA_PREFIXES = ['langfuse.trace.metadata.', 'langfuse.observation.metadata.', 'langfuse.metadata.', 'ai.telemetry.metadata.'] as const
/** A JSON object as a string: its top-level scalars → metadata. */
export const METADATA_JSON_ATTRS = ['metadata', 'langfuse.trace.metadata', 'langfuse.observation.metadata', 'langfuse.metadata'] as const

/** The dimension table the README publishes (a test keeps the two in step). */
export const DIMENSION_ALIASES: readonly Alias[] = [
  { field: 'user_id', attributes: USER_ID_ATTRS, note: '1–256 characters; an integer is read as its decimal text' },
  { field: 'session_id', attributes: SESSION_ID_ATTRS, note: '1–256 characters; an integer is read as its decimal text' },
  { field: 'tags', attributes: TAGS_ATTRS, note: 'a string list, a JSON array string, or a comma-separated string; trimmed, each 1–64 characters, duplicates dropped, the first 16 kept' }
]

/**
 * `gen_ai.provider.name` / `gen_ai.system` values → the provider id genai-prices uses, so the
 * event is priced from the right table and with the right cached-token convention. Keys are
 * lower-cased (OpenLLMetry writes `Anthropic`, `AWS`, `Azure`, `Google`, `OpenRouter`).
 * Sources: OTel `GEN_AI_PROVIDER_NAME_VALUE_*` and the older `GEN_AI_SYSTEM_VALUE_*`, OpenLIT's
 * `GEN_AI_SYSTEM_*` (old and new spellings), OpenLLMetry's `_get_vendor_from_url`.
 */
export const PROVIDER_ALIASES: Readonly<Record<string, string>> = {
  openai: 'openai',
  anthropic: 'anthropic',
  'aws.bedrock': 'aws',
  bedrock: 'aws',
  aws: 'aws',
  'azure.ai.openai': 'azure',
  'az.ai.openai': 'azure',
  azure_openai: 'azure',
  'azure.ai.inference': 'azure',
  'az.ai.inference': 'azure',
  'azure-ai-inference': 'azure',
  azure: 'azure',
  'gcp.vertex_ai': 'google',
  vertex_ai: 'google',
  'gcp.gemini': 'google',
  gemini: 'google',
  'gcp.gen_ai': 'google',
  'google.ai.studio': 'google',
  'google-ai-studio': 'google',
  vertexai: 'google',
  google: 'google',
  mistral_ai: 'mistral',
  mistralai: 'mistral',
  mistral: 'mistral',
  x_ai: 'x-ai',
  xai: 'x-ai',
  cohere: 'cohere',
  groq: 'groq',
  deepseek: 'deepseek',
  perplexity: 'perplexity',
  openrouter: 'openrouter',
  together: 'together',
  fireworks: 'fireworks',
  cerebras: 'cerebras'
}

/**
 * `openinference.span.kind` values that are one model call; every other kind (`CHAIN`, `AGENT`,
 * `TOOL`, `RETRIEVER`, …) is ignored like a non-call `gen_ai.operation.name`.
 */
export const OPENINFERENCE_CALL_KINDS: ReadonlySet<string> = new Set(['LLM', 'EMBEDDING'])

/**
 * `gen_ai.operation.name` values that are one model call. Spans with another operation
 * (`invoke_agent`, `execute_tool`, `invoke_workflow`, `vectordb`, `retrieval`, …) are ignored
 * even when they carry a model and token totals: those totals repeat their child calls'.
 * A span without the attribute (older OpenLLMetry) is judged by its other attributes.
 */
export const LLM_OPERATIONS: ReadonlySet<string> = new Set([
  'chat',
  'text_completion',
  'completion',
  'generate_content',
  'embeddings',
  'embedding',
  'image',
  'audio'
])
