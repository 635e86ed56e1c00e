import Foundation
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

struct ProcessControlTests {
    /// Dispatch installs its own handler for a signal source some time after `resume()` returns; until then
    /// the disposition is SIG_IGN and a signal is lost (`uds listen` then never ended on a SIGTERM sent as
    /// soon as it was up). A signal raised the moment `signals()` returns must arrive on the stream.
    @Test("a SIGTERM raised the moment signals() returns arrives on the stream")
    func signalRightAfterSetupArrives() async {
        await #expect(processExitsWith: .success) {
            let signals = ProcessControl.signals([.terminate])
            kill(getpid(), SIGTERM)
            let arrived = Task {
                for await signal in signals { return signal == .terminate }
                return false
            }
            let watchdog = Task {
                try? await Task.sleep(for: .seconds(10))
                arrived.cancel()
            }
            let result = await arrived.value
            watchdog.cancel()
            exit(result ? 0 : 1)
        }
    }
}
