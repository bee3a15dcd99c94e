module github.com/paddock-dev/paddock

go 1.26
