module ctxkitbench

go 1.19
