# fish completion for qimg. Keep in sync with cli/main.cpp and man/qimg.1.

set -l cmds amend bench check commit compare convert create info io map measure rebase resize snapshot
set -l amend_keys backing_file= backing_fmt= compat= data_file= data_file_raw= extended_l2= lazy_refcounts= refcount_bits= size= help
set -l okeys backing_file= backing_fmt= cluster_size= compat= compression_type= data_file= data_file_raw= encrypt.cipher-alg= encrypt.cipher-mode= encrypt.format= encrypt.hash-alg= encrypt.iter-time= encrypt.ivgen-alg= encrypt.ivgen-hash-alg= encrypt.key-secret= encryption= extended_l2= lazy_refcounts= preallocation= refcount_bits= size= help

complete -c qimg -f
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -s V -l version -d 'Print version'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -s h -l help -d 'Print help'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -a amend -d 'Change the format-specific options of an image'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -a bench -d 'Run a benchmark or a copy-on-write scenario'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -a check -d 'Check the image for errors'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -a commit -d 'Commit the content of an image into its backing file'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -a compare -d 'Check whether two images have the same content'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -a convert -d 'Convert or copy images'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -a create -d 'Create a new image'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -a info -d 'Show information about an image'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -a io -d 'Run qemu-io style commands'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -a map -d 'Show the allocation map'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -a measure -d 'Calculate the file size required for a new image'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -a rebase -d 'Change the backing file of an image'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -a resize -d 'Change the virtual size of an image'
complete -c qimg -n "not __fish_seen_subcommand_from $cmds" -a snapshot -d 'List, apply, create or delete internal snapshots'

# amend
complete -c qimg -n '__fish_seen_subcommand_from amend' -F
complete -c qimg -n '__fish_seen_subcommand_from amend' -s f -x -a 'qcow2' -d 'Image format'
complete -c qimg -n '__fish_seen_subcommand_from amend' -s o -x -a "$amend_keys" -d 'Options to change'
complete -c qimg -n '__fish_seen_subcommand_from amend' -l object -x -d 'Secret object: secret,id=ID,data=...|file=...'
complete -c qimg -n '__fish_seen_subcommand_from amend' -l image-opts -d 'Image argument is an option list'
complete -c qimg -n '__fish_seen_subcommand_from amend' -l key-secret -x -d 'Secret id that unlocks the image'
complete -c qimg -n '__fish_seen_subcommand_from amend' -s p -d 'Show progress'
complete -c qimg -n '__fish_seen_subcommand_from amend' -s q -d 'Quiet'
complete -c qimg -n '__fish_seen_subcommand_from amend' -l force -d 'Accepted for qemu-img compatibility'

# create
complete -c qimg -n '__fish_seen_subcommand_from create' -F
complete -c qimg -n '__fish_seen_subcommand_from create' -s f -x -a 'qcow2 raw' -d 'Image format'
complete -c qimg -n '__fish_seen_subcommand_from create' -s o -x -a "$okeys" -d 'Format options'
complete -c qimg -n '__fish_seen_subcommand_from create' -s b -r -F -d 'Backing file'
complete -c qimg -n '__fish_seen_subcommand_from create' -s F -x -a 'qcow2 raw' -d 'Backing file format'
complete -c qimg -n '__fish_seen_subcommand_from create' -s u -d 'Do not open the backing file'
complete -c qimg -n '__fish_seen_subcommand_from create' -s q -d 'Quiet'

# info
complete -c qimg -n '__fish_seen_subcommand_from info' -F
complete -c qimg -n '__fish_seen_subcommand_from info' -s f -x -a 'qcow2 raw' -d 'Image format'
complete -c qimg -n '__fish_seen_subcommand_from info' -l output -x -a 'human json' -d 'Output format'
complete -c qimg -n '__fish_seen_subcommand_from info' -l backing-chain -d 'Show the backing chain'
complete -c qimg -n '__fish_seen_subcommand_from info' -s U -l force-share -d 'Do not take the lock'

# map
complete -c qimg -n '__fish_seen_subcommand_from map' -F
complete -c qimg -n '__fish_seen_subcommand_from map' -s f -x -a 'qcow2 raw' -d 'Image format'
complete -c qimg -n '__fish_seen_subcommand_from map' -l output -x -a 'human json' -d 'Output format'
complete -c qimg -n '__fish_seen_subcommand_from map' -l start-offset -x -d 'First offset'
complete -c qimg -n '__fish_seen_subcommand_from map' -l max-length -x -d 'Length to map'
complete -c qimg -n '__fish_seen_subcommand_from map' -s U -l force-share -d 'Do not take the lock'

# convert
complete -c qimg -n '__fish_seen_subcommand_from convert' -F
complete -c qimg -n '__fish_seen_subcommand_from convert' -s f -x -a 'qcow2 raw' -d 'Source format'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s O -x -a 'qcow2 raw' -d 'Output format'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s o -x -a "$okeys" -d 'Output format options'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s c -d 'Compress the output'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s p -d 'Show progress'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s q -d 'Quiet'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s n -d 'Do not create the target'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s S -x -d 'Minimum zero run left unwritten'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s U -l force-share -d 'Do not take the lock'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s B -r -F -d 'Make the output an overlay of this backing file'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s F -x -a 'qcow2 raw' -d 'Backing file format'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s l -x -d 'Internal snapshot (snapshot.id=ID,snapshot.name=NAME)'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s s -x -d 'Internal snapshot id or name'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s m -x -d 'Parallel workers (1-16)'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s W -d 'Allow out-of-order writes'
complete -c qimg -n '__fish_seen_subcommand_from convert' -l target-is-zero -d 'Target reads as zeros (needs -n)'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s t -x -a 'unsafe writeback writethrough none directsync' -d 'Destination cache mode'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s T -x -a 'writeback writethrough unsafe none directsync' -d 'Source cache mode'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s r -x -d 'Rate limit in bytes per second'
complete -c qimg -n '__fish_seen_subcommand_from convert' -s C -d 'Copy offloading'
complete -c qimg -n '__fish_seen_subcommand_from convert' -l salvage -d 'Turn read errors into zeros'
complete -c qimg -n '__fish_seen_subcommand_from convert' -l bitmaps -d 'Copy persistent bitmaps'
complete -c qimg -n '__fish_seen_subcommand_from convert' -l skip-broken-bitmaps -d 'Skip inconsistent bitmaps'

# io
complete -c qimg -n '__fish_seen_subcommand_from io' -F
complete -c qimg -n '__fish_seen_subcommand_from io' -s f -x -a 'qcow2 raw' -d 'Image format'
complete -c qimg -n '__fish_seen_subcommand_from io' -s U -l force-share -d 'Do not take the lock'
complete -c qimg -n '__fish_seen_subcommand_from io' -s r -l read-only -d 'Open read-only'
complete -c qimg -n '__fish_seen_subcommand_from io' -s t -l cache -x -a 'none writeback writethrough directsync unsafe' -d 'Cache mode'
complete -c qimg -n '__fish_seen_subcommand_from io' -s c -l cmd -x -a 'read write discard flush map info' -d 'Command'

# bench
complete -c qimg -n '__fish_seen_subcommand_from bench' -F
complete -c qimg -n '__fish_seen_subcommand_from bench' -s c -l count -x -d 'Number of requests'
complete -c qimg -n '__fish_seen_subcommand_from bench' -s d -x -d 'Requests in parallel'
complete -c qimg -n '__fish_seen_subcommand_from bench' -s f -x -a 'qcow2 raw' -d 'Image format'
complete -c qimg -n '__fish_seen_subcommand_from bench' -l flush-interval -x -d 'Flush every N requests'
complete -c qimg -n '__fish_seen_subcommand_from bench' -s n -d 'Native AIO'
complete -c qimg -n '__fish_seen_subcommand_from bench' -s i -x -a 'threads native io_uring' -d 'AIO mode'
complete -c qimg -n '__fish_seen_subcommand_from bench' -l no-drain -d 'Flush without draining the queue'
complete -c qimg -n '__fish_seen_subcommand_from bench' -s o -x -d 'Start offset; image options in scenario mode'
complete -c qimg -n '__fish_seen_subcommand_from bench' -l pattern -x -d 'Byte written by write tests'
complete -c qimg -n '__fish_seen_subcommand_from bench' -s q -d 'Quiet'
complete -c qimg -n '__fish_seen_subcommand_from bench' -s s -x -d 'Request size'
complete -c qimg -n '__fish_seen_subcommand_from bench' -s S -x -d 'Step between request offsets'
complete -c qimg -n '__fish_seen_subcommand_from bench' -s t -x -a 'none writeback writethrough directsync unsafe' -d 'Cache mode'
complete -c qimg -n '__fish_seen_subcommand_from bench' -s w -d 'Write test'
complete -c qimg -n '__fish_seen_subcommand_from bench' -s U -l force-share -d 'Do not take the lock'
complete -c qimg -n '__fish_seen_subcommand_from bench' -l scenario -x -a 'interleave cow-backing alloc partial rewrite' -d 'Scenario'
complete -c qimg -n '__fish_seen_subcommand_from bench' -l matrix -x -d 'Sweep image options (key=v1,v2;key2=v1,v2)'
complete -c qimg -n '__fish_seen_subcommand_from bench' -l dir -x -a '(__fish_complete_directories)' -d 'Scratch directory parent'
complete -c qimg -n '__fish_seen_subcommand_from bench' -l keep -d 'Keep the scenario images'
complete -c qimg -n '__fish_seen_subcommand_from bench' -l size -x -d 'Virtual disk size of the scenario images'
complete -c qimg -n '__fish_seen_subcommand_from bench' -l block-size -x -d 'Request size of the scenario writes'
complete -c qimg -n '__fish_seen_subcommand_from bench' -l seed -x -d 'Seed of the random offsets'
complete -c qimg -n '__fish_seen_subcommand_from bench' -l baseline -x -a 'raw' -d 'Also run on raw files'
complete -c qimg -n '__fish_seen_subcommand_from bench' -l alloc -x -a 'default reserve' -d 'Host cluster allocation'
complete -c qimg -n '__fish_seen_subcommand_from bench' -l output -x -a 'human json csv' -d 'Output format'
complete -c qimg -n '__fish_seen_subcommand_from bench' -l plot -r -F -d 'Write an SVG chart'

# check
complete -c qimg -n '__fish_seen_subcommand_from check' -F
complete -c qimg -n '__fish_seen_subcommand_from check' -s f -x -a 'qcow2 raw' -d 'Image format'
complete -c qimg -n '__fish_seen_subcommand_from check' -s r -x -a 'leaks all' -d 'Repair'
complete -c qimg -n '__fish_seen_subcommand_from check' -l output -x -a 'human json' -d 'Output format'
complete -c qimg -n '__fish_seen_subcommand_from check' -s q -d 'Quiet'
complete -c qimg -n '__fish_seen_subcommand_from check' -s U -l force-share -d 'Do not take the lock'
complete -c qimg -n '__fish_seen_subcommand_from create' -l object -x -d 'Secret object: secret,id=ID,data=...|file=...'
complete -c qimg -n '__fish_seen_subcommand_from create' -l image-opts -d 'Image argument is an option list'
complete -c qimg -n '__fish_seen_subcommand_from create' -l key-secret -x -d 'Secret id that unlocks the image'
complete -c qimg -n '__fish_seen_subcommand_from info' -l object -x -d 'Secret object: secret,id=ID,data=...|file=...'
complete -c qimg -n '__fish_seen_subcommand_from info' -l image-opts -d 'Image argument is an option list'
complete -c qimg -n '__fish_seen_subcommand_from info' -l key-secret -x -d 'Secret id that unlocks the image'
complete -c qimg -n '__fish_seen_subcommand_from map' -l object -x -d 'Secret object: secret,id=ID,data=...|file=...'
complete -c qimg -n '__fish_seen_subcommand_from map' -l image-opts -d 'Image argument is an option list'
complete -c qimg -n '__fish_seen_subcommand_from map' -l key-secret -x -d 'Secret id that unlocks the image'
complete -c qimg -n '__fish_seen_subcommand_from convert' -l object -x -d 'Secret object: secret,id=ID,data=...|file=...'
complete -c qimg -n '__fish_seen_subcommand_from convert' -l image-opts -d 'Image argument is an option list'
complete -c qimg -n '__fish_seen_subcommand_from convert' -l key-secret -x -d 'Secret id that unlocks the image'
complete -c qimg -n '__fish_seen_subcommand_from io' -l object -x -d 'Secret object: secret,id=ID,data=...|file=...'
complete -c qimg -n '__fish_seen_subcommand_from io' -l image-opts -d 'Image argument is an option list'
complete -c qimg -n '__fish_seen_subcommand_from io' -l key-secret -x -d 'Secret id that unlocks the image'
complete -c qimg -n '__fish_seen_subcommand_from check' -l object -x -d 'Secret object: secret,id=ID,data=...|file=...'
complete -c qimg -n '__fish_seen_subcommand_from check' -l image-opts -d 'Image argument is an option list'
complete -c qimg -n '__fish_seen_subcommand_from check' -l key-secret -x -d 'Secret id that unlocks the image'

# compare
complete -c qimg -n '__fish_seen_subcommand_from compare' -F
complete -c qimg -n '__fish_seen_subcommand_from compare' -s f -x -a 'qcow2 raw' -d 'Format of the first image'
complete -c qimg -n '__fish_seen_subcommand_from compare' -s F -x -a 'qcow2 raw' -d 'Format of the second image'
complete -c qimg -n '__fish_seen_subcommand_from compare' -s s -d 'Strict: sizes and allocation must match too'
complete -c qimg -n '__fish_seen_subcommand_from compare' -s p -d 'Show progress'
complete -c qimg -n '__fish_seen_subcommand_from compare' -s q -d 'Quiet'
complete -c qimg -n '__fish_seen_subcommand_from compare' -s U -l force-share -d 'Do not take the lock'
complete -c qimg -n '__fish_seen_subcommand_from compare' -s T -x -a 'writeback writethrough unsafe none directsync' -d 'Source cache mode'
complete -c qimg -n '__fish_seen_subcommand_from compare' -l object -x -d 'Secret object: secret,id=ID,data=...|file=...'
complete -c qimg -n '__fish_seen_subcommand_from compare' -l image-opts -d 'Image argument is an option list'
complete -c qimg -n '__fish_seen_subcommand_from compare' -l key-secret -x -d 'Secret id that unlocks the image'

# measure
complete -c qimg -n '__fish_seen_subcommand_from measure' -F
complete -c qimg -n '__fish_seen_subcommand_from measure' -l output -x -a 'human json' -d 'Output format'
complete -c qimg -n '__fish_seen_subcommand_from measure' -s O -x -a 'raw qcow2' -d 'Format of the new image'
complete -c qimg -n '__fish_seen_subcommand_from measure' -s o -x -a "$okeys nocow= extent_size_hint=" -d 'Creation options of the new image'
complete -c qimg -n '__fish_seen_subcommand_from measure' -s f -x -a 'qcow2 raw' -d 'Format of the source image'
complete -c qimg -n '__fish_seen_subcommand_from measure' -s l -x -d 'Internal snapshot of the source'
complete -c qimg -n '__fish_seen_subcommand_from measure' -l size -x -d 'Virtual size of an empty image'
complete -c qimg -n '__fish_seen_subcommand_from measure' -s U -l force-share -d 'Do not take the lock'
complete -c qimg -n '__fish_seen_subcommand_from measure' -l object -x -d 'Secret object: secret,id=ID,data=...|file=...'
complete -c qimg -n '__fish_seen_subcommand_from measure' -l image-opts -d 'Image argument is an option list'
complete -c qimg -n '__fish_seen_subcommand_from measure' -l key-secret -x -d 'Secret id that unlocks the image'

# commit
complete -c qimg -n '__fish_seen_subcommand_from commit' -F
complete -c qimg -n '__fish_seen_subcommand_from commit' -s f -x -a 'qcow2 raw' -d 'Image format'
complete -c qimg -n '__fish_seen_subcommand_from commit' -s t -x -a 'writeback writethrough unsafe none directsync' -d 'Cache mode'
complete -c qimg -n '__fish_seen_subcommand_from commit' -s b -r -d 'Commit into this image of the backing chain (implies -d)'
complete -c qimg -n '__fish_seen_subcommand_from commit' -s r -x -d 'Rate limit in bytes per second'
complete -c qimg -n '__fish_seen_subcommand_from commit' -s d -d 'Do not empty the image after the commit'
complete -c qimg -n '__fish_seen_subcommand_from commit' -s p -d 'Show progress'
complete -c qimg -n '__fish_seen_subcommand_from commit' -s q -d 'Quiet'
complete -c qimg -n '__fish_seen_subcommand_from commit' -l object -x -d 'Secret object: secret,id=ID,data=...|file=...'
complete -c qimg -n '__fish_seen_subcommand_from commit' -l image-opts -d 'Image argument is an option list'
complete -c qimg -n '__fish_seen_subcommand_from commit' -l key-secret -x -d 'Secret id that unlocks the image'

# rebase
complete -c qimg -n '__fish_seen_subcommand_from rebase' -F
complete -c qimg -n '__fish_seen_subcommand_from rebase' -s f -x -a 'qcow2 raw' -d 'Image format'
complete -c qimg -n '__fish_seen_subcommand_from rebase' -s t -x -a 'writeback writethrough unsafe none directsync' -d 'Cache mode of the image'
complete -c qimg -n '__fish_seen_subcommand_from rebase' -s T -x -a 'writeback writethrough unsafe none directsync' -d 'Cache mode of the backing files'
complete -c qimg -n '__fish_seen_subcommand_from rebase' -s p -d 'Show progress'
complete -c qimg -n '__fish_seen_subcommand_from rebase' -s u -d 'Unsafe: only change the backing file name'
complete -c qimg -n '__fish_seen_subcommand_from rebase' -s c -d 'Write the copied clusters compressed'
complete -c qimg -n '__fish_seen_subcommand_from rebase' -s b -r -d 'New backing file (empty: none)'
complete -c qimg -n '__fish_seen_subcommand_from rebase' -s F -x -a 'qcow2 raw' -d 'Format of the new backing file'
complete -c qimg -n '__fish_seen_subcommand_from rebase' -s q -d 'Quiet'
complete -c qimg -n '__fish_seen_subcommand_from rebase' -s U -l force-share -d 'Open the new backing file without the lock'
complete -c qimg -n '__fish_seen_subcommand_from rebase' -l object -x -d 'Secret object: secret,id=ID,data=...|file=...'
complete -c qimg -n '__fish_seen_subcommand_from rebase' -l image-opts -d 'Image argument is an option list'
complete -c qimg -n '__fish_seen_subcommand_from rebase' -l key-secret -x -d 'Secret id that unlocks the image'

# resize
complete -c qimg -n '__fish_seen_subcommand_from resize' -F
complete -c qimg -n '__fish_seen_subcommand_from resize' -s f -x -a 'qcow2 raw' -d 'Image format'
complete -c qimg -n '__fish_seen_subcommand_from resize' -l preallocation -x -a 'off metadata falloc full' -d 'Preallocation of the grown part'
complete -c qimg -n '__fish_seen_subcommand_from resize' -l shrink -d 'Allow the size to go down'
complete -c qimg -n '__fish_seen_subcommand_from resize' -s q -d 'Quiet'
complete -c qimg -n '__fish_seen_subcommand_from resize' -l object -x -d 'Secret object: secret,id=ID,data=...|file=...'
complete -c qimg -n '__fish_seen_subcommand_from resize' -l image-opts -d 'Image argument is an option list'
complete -c qimg -n '__fish_seen_subcommand_from resize' -l key-secret -x -d 'Secret id that unlocks the image'

# snapshot
complete -c qimg -n '__fish_seen_subcommand_from snapshot' -F
complete -c qimg -n '__fish_seen_subcommand_from snapshot' -s l -d 'List the snapshots'
complete -c qimg -n '__fish_seen_subcommand_from snapshot' -s a -x -d 'Apply a snapshot'
complete -c qimg -n '__fish_seen_subcommand_from snapshot' -s c -x -d 'Create a snapshot'
complete -c qimg -n '__fish_seen_subcommand_from snapshot' -s d -x -d 'Delete a snapshot'
complete -c qimg -n '__fish_seen_subcommand_from snapshot' -s q -d 'Quiet'
complete -c qimg -n '__fish_seen_subcommand_from snapshot' -s U -l force-share -d 'Open without the lock (-l only)'
complete -c qimg -n '__fish_seen_subcommand_from snapshot' -l object -x -d 'Secret object: secret,id=ID,data=...|file=...'
complete -c qimg -n '__fish_seen_subcommand_from snapshot' -l image-opts -d 'Image argument is an option list'
complete -c qimg -n '__fish_seen_subcommand_from snapshot' -l key-secret -x -d 'Secret id that unlocks the image'
