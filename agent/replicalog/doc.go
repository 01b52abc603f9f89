// Package replicalog keeps a replica's output in size-bounded, rotated log
// files and reads them back: all of it, the last lines of it, or following
// it as it grows.
//
// A replica directory holds replica.log, the file being written, and up to
// maxFiles-1 older ones: replica.log.1 (the newest of them) to
// replica.log.<maxFiles-1> (the oldest). Read in the order
// replica.log.<k> ... replica.log.1, replica.log, they are the replica's
// output as one stream, with nothing lost inside it and nothing repeated;
// only the oldest bytes are dropped as rotation deletes the oldest file.
//
// Why not lumberjack (gopkg.in/natefinch/lumberjack.v2): its backups are
// named by timestamp, so a reader has to sort and parse names to find them
// in order, while here replica.log.1, .2, ... are found by number; it
// deletes old backups in a goroutine after the rotation, so the disk can
// hold more than the bound for a while, while here the oldest file is gone
// before the new one is written, so a replica's logs never take more than
// maxBytes*maxFiles; and it counts its size limit in whole megabytes, while
// tests here rotate at a few KiB.
package replicalog
