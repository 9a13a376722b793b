// Planning a large matrix allocates many small strings and maps from several threads;
// mimalloc does that markedly faster than the system allocator (benches/engine.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(pipeline::main_with_args(std::env::args_os()));
}
