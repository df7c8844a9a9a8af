from onehazel.cli import main

main()
