// mimalloc: the allocator's share of a read request's instructions falls from 25-28% (glibc)
// to about 10% (BENCHMARKS.md, "The read path's allocator and middleware").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<std::process::ExitCode> {
    api::cli::main()
}
