from operator_console.cli import main

main()
