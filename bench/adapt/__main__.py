from bench.adapt.run import main

main()
