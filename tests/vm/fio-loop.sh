#!/bin/sh
# Guest helper: fio jobs with verification on DIR, one after another, until
# /work/stop-fio appears (so every kill or hand-over lands inside one). Job N writes
# /work/fio-NAME-N.out and appends "N EXIT_CODE" to /work/fio-NAME-results.
# usage: fio-loop.sh DIR NAME
dir=$1 name=$2
j=0
while [ ! -e /work/stop-fio ]; do
    j=$((j + 1))
    fio --name="$name$j" --directory="$dir" --size=32M --bsrange=4k-1m --rw=randwrite \
        --iodepth=32 --ioengine=libaio --direct=1 --verify=crc32c --verify_fatal=1 \
        --do_verify=1 --output="/work/fio-$name-$j.out" > /dev/null 2>&1
    echo "$j $?" >> "/work/fio-$name-results"
    rm -f "$dir/$name$j.0.0"
done
