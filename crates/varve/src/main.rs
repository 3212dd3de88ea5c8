//! `varve`: the VarveDB command-line tool.

fn main() {
    eprintln!("varve: not built yet");
    std::process::exit(2);
}
