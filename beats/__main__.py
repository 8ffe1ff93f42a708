from beats.cli import main

main()
