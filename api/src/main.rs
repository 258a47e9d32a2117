// mimalloc's thread-local free lists cost about half of glibc's malloc and free per request
// on the read path (see BENCHMARKS.md, "A faster allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<std::process::ExitCode> {
    api::cli::main()
}
