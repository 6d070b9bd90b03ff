from bench.replay.run import main

main()
