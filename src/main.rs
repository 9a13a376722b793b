fn main() {
    std::process::exit(pipeline::main_with_args(std::env::args_os()));
}
