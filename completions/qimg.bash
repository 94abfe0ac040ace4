# bash completion for qimg                                   -*- shell-script -*-
# Keep in sync with the command table in cli/main.cpp and man/qimg.1.

_qimg_amend_keys="backing_file= backing_fmt= compat= data_file= data_file_raw= extended_l2= lazy_refcounts= refcount_bits= size= help"
_qimg_create_keys="backing_file= backing_fmt= cluster_size= compat= compression_type= data_file= data_file_raw= encrypt.cipher-alg= encrypt.cipher-mode= encrypt.format= encrypt.hash-alg= encrypt.iter-time= encrypt.ivgen-alg= encrypt.ivgen-hash-alg= encrypt.key-secret= encryption= extended_l2= lazy_refcounts= preallocation= refcount_bits= size= help"

_qimg()
{
    local cur prev words cword
    _init_completion -s || return

    local commands="amend bench check commit compare convert create info io map measure rebase resize snapshot"
    local cmd="" i
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            amend|bench|check|commit|compare|convert|create|info|io|map|measure|rebase|resize|snapshot) cmd=${words[i]}; break ;;
        esac
    done

    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "$commands -V --version -h --help" -- "$cur"))
        return
    fi

    case $prev in
        -f|-O|-F)
            COMPREPLY=($(compgen -W "qcow2 raw" -- "$cur")); return ;;
        --output)
            if [[ $cmd == bench ]]; then COMPREPLY=($(compgen -W "human json csv" -- "$cur")); return; fi
            COMPREPLY=($(compgen -W "human json" -- "$cur")); return ;;
        -t|--cache)
            COMPREPLY=($(compgen -W "none writeback writethrough directsync unsafe" -- "$cur")); return ;;
        -T)
            COMPREPLY=($(compgen -W "writeback writethrough unsafe none directsync" -- "$cur")); return ;;
        --scenario)
            COMPREPLY=($(compgen -W "interleave cow-backing alloc partial rewrite" -- "$cur")); return ;;
        --alloc)
            COMPREPLY=($(compgen -W "default reserve" -- "$cur")); return ;;
        --baseline)
            COMPREPLY=($(compgen -W "raw" -- "$cur")); return ;;
        -i)
            if [[ $cmd == bench ]]; then COMPREPLY=($(compgen -W "threads native io_uring" -- "$cur")); return; fi ;;
        --dir)
            _filedir -d; return ;;
        --plot)
            _filedir svg; return ;;
        -d)
            [[ $cmd == bench ]] && return ;;
        --count|--flush-interval|--pattern|--matrix|--size|--block-size|--seed)
            return ;;
        -r)
            if [[ $cmd == check ]]; then COMPREPLY=($(compgen -W "leaks all" -- "$cur")); return; fi
            [[ $cmd == commit ]] && return ;;
        -o)
            local prefix="" last="$cur"
            if [[ $cur == *,* ]]; then prefix="${cur%,*},"; last="${cur##*,}"; fi
            case $last in
                compat=*) COMPREPLY=($(compgen -P "$prefix${last%%=*}=" -W "0.10 1.1 v2 v3" -- "${last#*=}")) ;;
                preallocation=*) COMPREPLY=($(compgen -P "$prefix${last%%=*}=" -W "off metadata falloc full" -- "${last#*=}")) ;;
                compression_type=*) COMPREPLY=($(compgen -P "$prefix${last%%=*}=" -W "zlib zstd" -- "${last#*=}")) ;;
                extended_l2=*|lazy_refcounts=*|data_file_raw=*|encryption=*)
                    COMPREPLY=($(compgen -P "$prefix${last%%=*}=" -W "on off" -- "${last#*=}")) ;;
                *)
                    local keys=$_qimg_create_keys
                    [[ $cmd == amend ]] && keys=$_qimg_amend_keys
                    [[ $cmd == measure ]] && keys="$keys nocow= extent_size_hint="
                    COMPREPLY=($(compgen -P "$prefix" -W "$keys" -- "$last")); compopt -o nospace ;;
            esac
            return ;;
        -b|-B)
            _filedir; return ;;
        -c|--cmd)
            if [[ $cmd == io ]]; then
                COMPREPLY=($(compgen -W "read write discard flush map info" -- "$cur")); return
            fi ;;
        -S|-m|-l|-s|--start-offset|--max-length)
            return ;;
    esac

    if [[ $cur == -* ]]; then
        local opts
        case $cmd in
            amend)   opts="-f -o -p -q --force --object --image-opts --key-secret --help" ;;
            bench)   opts="-c --count -d -f --flush-interval -n -i --no-drain -o --pattern -q -s -S -t -w -U --force-share --scenario --matrix --dir --keep --size --block-size --seed --baseline --alloc --output --plot --help" ;;
            create)  opts="-f -o -b -F -u -q --object --image-opts --key-secret --help" ;;
            info)    opts="-f --output --backing-chain -U --force-share --object --image-opts --key-secret --help" ;;
            map)     opts="-f --output --start-offset --max-length -U --force-share --object --image-opts --key-secret --help" ;;
            convert) opts="-f -O -o -c -p -q -n -S -U --force-share -B -F -l -s -m -W -t -T -r -C --salvage --bitmaps --skip-broken-bitmaps --target-is-zero --object --image-opts --key-secret --help" ;;
            io)      opts="-f -U --force-share -r --read-only -t --cache -c --cmd --object --image-opts --key-secret --help" ;;
            check)   opts="-f -r --output -q -U --force-share --object --image-opts --key-secret --help" ;;
            commit)  opts="-f -t -b -r -d -p -q --object --image-opts --key-secret --help" ;;
            compare) opts="-f -F -s -p -q -U --force-share -T --object --image-opts --key-secret --help" ;;
            measure) opts="--output -O -o -f -l --size -U --force-share --object --image-opts --key-secret --help" ;;
            rebase)  opts="-f -t -T -p -u -c -b -F -q -U --force-share --object --image-opts --key-secret --help" ;;
            resize)  opts="-f --preallocation= --shrink -q --object --image-opts --key-secret --help" ;;
            snapshot) opts="-l -a -c -d -q -U --force-share --object --image-opts --key-secret --help" ;;
        esac
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        [[ ${COMPREPLY-} == *= ]] && compopt -o nospace
        return
    fi
    _filedir
} &&
    complete -F _qimg qimg
