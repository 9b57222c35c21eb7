internal import Dispatch

/// Runs blocking work (a libpq call) on a Dispatch thread, never on the caller's executor, and resumes the caller
/// with its result.
///
/// - Parameter work: the blocking work.
/// - Returns: what `work` returned.
public func runBlocking<Result: Sendable, Failure: Error>(
    _ work: @escaping @Sendable () throws(Failure) -> Result
) async throws(Failure) -> Result {
    let outcome: Swift.Result<Result, Failure> = await withCheckedContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(returning: Swift.Result { () throws(Failure) in try work() })
        }
    }
    return try outcome.get()
}
