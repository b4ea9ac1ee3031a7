import Foundation
import SwitchboardConfiguration
import SwitchboardCore
import Testing

@testable import SwitchboardGateway

@Suite struct GatewayResourcesTests {
    /// The repository's root, from this file's path.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func theResourceBundleBesideTheTestBinaryHasTheRepositorysFiles() throws {
        let resources = try GatewayResources.load(environment: [:])
        let clients = Self.root.appendingPathComponent("clients/js")
        #expect(resources.clientScript == Array(try Data(contentsOf: clients.appendingPathComponent("switchboard.js"))))
        #expect(resources.demoPage == Array(try Data(contentsOf: clients.appendingPathComponent("demo.html"))))
        let sources = Self.root.appendingPathComponent("Sources/SwitchboardGateway/Resources")
        #expect(resources.dashboardPage == Array(try Data(contentsOf: sources.appendingPathComponent("dashboard.html"))))
        #expect(resources.openAPIDocument[path: ["openapi"]] == .string("3.1.0"))
    }

    @Test func theVariableOverridesTheSearchAndAMissingDirectoryIsNamed() throws {
        let sources = Self.root.appendingPathComponent("Sources/SwitchboardGateway/Resources").path
        let resources = try GatewayResources.load(environment: [ConfigurationLoader.resourcesVariable: sources])
        #expect(resources.openAPIDocument[path: ["openapi"]] == .string("3.1.0"))
        #expect {
            try GatewayResources.load(environment: [ConfigurationLoader.resourcesVariable: "/nonexistent/switchboard"])
        } throws: { error in
            "\(error)".contains("/nonexistent/switchboard") && "\(error)".contains(ConfigurationLoader.resourcesVariable)
        }
    }

    @Test func theResourcesVariableIsNotAConfigurationKey() throws {
        let configuration = try ConfigurationLoader.load(yaml: nil, environment: ["SWITCHBOARD_RESOURCES": "/x"], arguments: [])
        #expect(configuration.port == 8080)
    }
}
