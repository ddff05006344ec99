//! `/v1/openapi.json`: the management API, described for clients.

use axum::Json;
use serde_json::{json, Value};

fn op(summary: &str, tag: &str) -> Value {
    json!({ "summary": summary, "tags": [tag], "responses": { "default": { "$ref": "#/components/responses/Error" } } })
}

fn with_ok(mut operation: Value, status: &str, schema: Value) -> Value {
    operation["responses"][status] =
        json!({ "description": "OK", "content": { "application/json": { "schema": schema } } });
    operation
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn array_of(name: &str) -> Value {
    json!({ "type": "array", "items": schema(name) })
}

/// The OpenAPI 3.1 document.
pub async fn document() -> Json<Value> {
    let name =
        json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } });
    let version = json!({ "name": "version", "in": "path", "required": true, "schema": { "type": "integer" } });
    Json(json!({
        "openapi": "3.1.0",
        "info": { "title": "isola management API", "version": env!("CARGO_PKG_VERSION") },
        "security": [{ "bearer": [] }],
        "paths": {
            "/v1/status": {
                "get": json!({ "summary": "The node at a glance: version, functions, warm isolates", "tags": ["node"],
                               "responses": { "200": { "description": "Status" }, "default": { "$ref": "#/components/responses/Error" } } }),
            },
            "/v1/functions": {
                "get": with_ok(op("List functions", "functions"), "200", array_of("Function")),
                "post": with_ok(
                    json!({ "summary": "Create a function", "tags": ["functions"],
                            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["name"], "properties": { "name": { "type": "string" } } } } } },
                            "responses": { "default": { "$ref": "#/components/responses/Error" } } }),
                    "201", schema("Function")),
            },
            "/v1/functions/{name}": {
                "parameters": [name],
                "get": with_ok(op("Get a function", "functions"), "200", schema("Function")),
                "delete": op("Delete a function with its deployments, records and logs", "functions"),
            },
            "/v1/functions/{name}/deployments": {
                "parameters": [name],
                "get": with_ok(op("List deployments, newest first", "deployments"), "200", array_of("Deployment")),
                "post": with_ok(
                    json!({ "summary": "Upload a deployment: validated in an isolate, stored, and activated unless ?activate=false", "tags": ["deployments"],
                            "parameters": [{ "name": "activate", "in": "query", "schema": { "type": "boolean" } }],
                            "requestBody": { "required": true, "content": {
                                "application/json": { "schema": schema("NewDeployment") },
                                "application/javascript": { "schema": { "type": "string" } } } },
                            "responses": { "default": { "$ref": "#/components/responses/Error" } } }),
                    "201", schema("Deployment")),
            },
            "/v1/functions/{name}/deployments/{version}/activate": {
                "parameters": [name, version],
                "post": with_ok(op("Activate a deployment", "deployments"), "200", schema("Deployment")),
            },
            "/v1/functions/{name}/rollback": {
                "parameters": [name],
                "post": with_ok(op("Activate the given version, or the one before the active one", "deployments"), "200", schema("Deployment")),
            },
            "/v1/functions/{name}/invoke": {
                "parameters": [name],
                "post": json!({ "summary": "Invoke with a JSON payload; the result is the body, metadata in x-isola-* headers", "tags": ["invoke"],
                                "parameters": [{ "name": "async", "in": "query", "required": false, "schema": { "type": "boolean" },
                                                 "description": "Queue the invocation (in a cluster) and answer 202 with its id; its record comes when it has run" }],
                                "requestBody": { "content": { "application/json": { "schema": {} } } },
                                "responses": { "200": { "description": "The function's result" },
                                               "202": { "description": "Queued", "content": { "application/json": { "schema": {
                                                   "type": "object", "properties": { "id": { "type": "string" } } } } } },
                                               "default": { "$ref": "#/components/responses/Error" } } }),
            },
            "/v1/functions/{name}/secrets": {
                "parameters": [name],
                "get": json!({ "summary": "Names of the function's secrets (values are never shown)", "tags": ["secrets"],
                               "responses": { "200": { "description": "Names", "content": { "application/json": { "schema": {
                                   "type": "object", "properties": { "names": { "type": "array", "items": { "type": "string" } } } } } } },
                                   "default": { "$ref": "#/components/responses/Error" } } }),
            },
            "/v1/functions/{name}/secrets/{secret}": {
                "parameters": [name, { "name": "secret", "in": "path", "required": true, "schema": { "type": "string" } }],
                "put": json!({ "summary": "Set a secret (the body is its value): deploys the active deployment again with it", "tags": ["secrets"],
                               "requestBody": { "content": { "text/plain": { "schema": { "type": "string" } } } },
                               "responses": { "200": { "description": "The new deployment", "content": { "application/json": { "schema": schema("Deployment") } } },
                                   "default": { "$ref": "#/components/responses/Error" } } }),
                "delete": with_ok(op("Remove a secret: deploys the active deployment again without it", "secrets"), "200", schema("Deployment")),
            },
            "/v1/functions/{name}/invocations": {
                "parameters": [name, { "name": "limit", "in": "query", "schema": { "type": "integer" } }],
                "get": with_ok(op("Latest invocation records", "invoke"), "200", array_of("Invocation")),
            },
            "/v1/functions/{name}/invocations/{id}": {
                "parameters": [name, { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "get": with_ok(op("Where a queued (?async=true) invocation stands, and its result once it ran; kept a day", "invoke"), "200", schema("QueuedInvocation")),
            },
            "/v1/functions/{name}/logs": {
                "parameters": [name,
                    { "name": "after", "in": "query", "schema": { "type": "integer" } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer" } },
                    { "name": "follow", "in": "query", "schema": { "type": "boolean" } }],
                "get": json!({ "summary": "Console output; Server-Sent Events with follow=true or Accept: text/event-stream", "tags": ["logs"],
                               "responses": { "200": { "description": "Log lines", "content": {
                                   "application/json": { "schema": array_of("LogLine") },
                                   "text/event-stream": { "schema": { "type": "string" } } } },
                                   "default": { "$ref": "#/components/responses/Error" } } }),
            },
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": { "Error": { "description": "An error", "content": { "application/json": { "schema": schema("Error") } } } },
            "schemas": {
                "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": {
                    "code": { "type": "string" }, "message": { "type": "string" }, "stack": { "type": "string" } } } } },
                "Function": { "type": "object", "properties": {
                    "name": { "type": "string" }, "created_at": { "type": "integer" }, "active_version": { "type": ["integer", "null"] } } },
                "Limits": { "type": "object", "properties": {
                    "memory_mb": { "type": "integer" }, "cpu_ms": { "type": "integer" }, "timeout_ms": { "type": "integer" } } },
                "NewDeployment": { "type": "object", "required": ["files", "entry"], "properties": {
                    "files": { "type": "array", "items": { "type": "object", "properties": { "path": { "type": "string" }, "code": { "type": "string" } } } },
                    "entry": { "type": "string" }, "limits": schema("Limits"),
                    "env": { "type": "object", "additionalProperties": { "type": "string" } },
                    "secrets": { "type": "object", "additionalProperties": { "type": "string" } } } },
                "Deployment": { "type": "object", "properties": {
                    "function": { "type": "string" }, "version": { "type": "integer" }, "hash": { "type": "string" },
                    "entry": { "type": "string" }, "files": { "type": "array", "items": { "type": "string" } },
                    "limits": schema("Limits"), "env": { "type": "object" },
                    "secret_names": { "type": "array", "items": { "type": "string" } },
                    "created_at": { "type": "integer" }, "active": { "type": "boolean" } } },
                "Invocation": { "type": "object", "properties": {
                    "id": { "type": "string" }, "function": { "type": "string" }, "version": { "type": "integer" },
                    "status": { "type": "string" }, "error_code": { "type": ["string", "null"] },
                    "error_message": { "type": ["string", "null"], "description": "The error's message and stack, when it failed" },
                    "request": { "type": ["object", "null"], "description": "The HTTP request it answered", "properties": {
                        "method": { "type": "string" }, "path": { "type": "string" }, "status": { "type": ["integer", "null"] } } },
                    "duration_us": { "type": "integer" }, "cpu_us": { "type": "integer" },
                    "peak_heap_bytes": { "type": "integer" }, "cold_start": { "type": "boolean" }, "created_at": { "type": "integer" } } },
                "QueuedInvocation": { "type": "object", "properties": {
                    "id": { "type": "string" }, "function": { "type": "string" },
                    "state": { "type": "string", "enum": ["queued", "ok", "error", "dead"] },
                    "deliveries": { "type": "integer", "description": "Times a worker took it" },
                    "error": { "type": "object", "properties": { "code": { "type": "string" }, "message": { "type": "string" } } },
                    "output": { "description": "A JSON handler's result; {status} for a fetch handler's response" },
                    "output_omitted": { "type": "boolean", "description": "The result was over 64 KiB and is not kept" } } },
                "LogLine": { "type": "object", "properties": {
                    "seq": { "type": "integer" }, "function": { "type": "string" }, "invocation_id": { "type": "string" },
                    "level": { "type": "string" }, "message": { "type": "string" }, "created_at": { "type": "integer" } } },
            },
        },
    }))
}
