/// The OpenAPI 3.1 description of the management API, served at `/@openapi.json`.
enum OpenAPIDocument {
    static let json = #"{}"#
}
