// A framed echo service written the way a systemd service is: it serves the socket systemd (or
// `uds activate`, or `systemd-socket-activate`) passed it, tells the manager READY=1 once it accepts and
// STOPPING=1 when it stops, pings the watchdog when the unit asks for one (WatchdogSec=), and shuts down
// gracefully on SIGTERM through swift-service-lifecycle's ServiceGroup. Started by hand, it binds ADDRESS.
//
//     echo-service [ADDRESS]
//
// Each frame (4-byte big-endian length, then the bytes) goes back to its sender with its descriptors.
import Logging
import ServiceLifecycle
import UnixSignals
import UnixSockets

@main
struct EchoService {
    static func main() async throws {
        let logger = Logger(label: "echo-service")
        let listener: UnixStreamListener
        if let activated = try SocketActivation.sockets().first {
            listener = try activated.listener(UnixStream.self)  // systemd's socket: never unlinked by us
        } else {
            let address = CommandLine.arguments.dropFirst().first ?? "/tmp/echo-service.sock"
            listener = try UnixStreamListener.bind(try UnixAddress(address))
        }
        var configuration = UnixServerConfiguration()
        configuration.serviceNotifier = try ServiceNotifier.fromEnvironment()  // nil unless NOTIFY_SOCKET is set
        configuration.pingsWatchdog = true
        let server = try UnixServer(listener: listener, configuration: configuration, logger: logger) { connection in
            while let frame = try await connection.receive() {
                try connection.send(frame.bytes, descriptors: frame.descriptors.compactMap { $0.take() })
            }
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [server],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await group.run()
    }
}
