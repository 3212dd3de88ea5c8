//! `varve`: the VarveDB command-line tool. Everything is in the library part of this crate, so
//! that an application can build the same tool with decoders for its own event types.

fn main() -> std::process::ExitCode {
    varve::run(&varve::Decoders::new())
}
