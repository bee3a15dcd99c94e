// Package fstree works on directory trees that hostile code built: a
// sandbox's upper dir, a snapshot or image layer, a volume's content. Such
// a tree may be arbitrarily deep or wide and hold symlinks pointing
// anywhere, so every operation here goes through file descriptors with
// O_NOFOLLOW and holds a bounded number of them and a bounded stack,
// whatever the tree's shape: os.RemoveAll opens one directory per level and
// recurses, so a tree some hundred thousand levels deep exhausts the
// process's file descriptors (and then its stack), taking every tenant's
// requests down with it.
package fstree
