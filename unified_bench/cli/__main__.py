from unified_bench.cli import main

main()
