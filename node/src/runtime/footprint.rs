//! What a long-lived shim gives back after the heavy, rare work (creating the container,
//! starting an exec process): the shim stays resident for the container's whole life, so
//! memory that work touched once would otherwise stay counted against every container.
//!
//! ```text
//!  create / exec build (libcontainer, serde, spec)   then  give_back():
//!    ├ code pages of `wharf` faulted in         ──►  madvise(DONTNEED) on the binary's clean
//!    │                                                read-only mappings: the hot loop faults back
//!    │                                                only the pages it runs (page cache, shared)
//!    ├ freed heap kept by malloc                ──►  malloc_trim(0)
//!    └ deep stack frames below the current one  ──►  madvise(DONTNEED) below sp - margin
//! ```
//!
//! Only read-only mappings of the binary that hold no copied-on-write page are dropped
//! (its code and `.rodata`), so a later access reads the same bytes back from the page
//! cache; the relocated `.data.rel.ro`, the GOT and all data pages are left alone. The dead part of
//! the stack lies below the stack pointer, which nothing may rely on (the x86-64 red zone
//! is 128 bytes; the margin is far larger). [`clean_ranges`] and [`dead_stack`] are the pure
//! decisions.

/// Bytes of stack kept below the current frame when the dead part is dropped.
const STACK_MARGIN: usize = 16 * 1024;

/// Address ranges (`start..end`) of the mappings of `exe` in `/proc/self/smaps` text
/// that hold only page-cache pages: read-only (`r--p`, `r-xp`) and without any anonymous
/// (copied-on-write) page, such as its code and `.rodata`, but not the `.data.rel.ro` and
/// GOT the loader relocated. These are the pages [`give_back`] may drop.
pub fn clean_ranges(smaps: &str, exe: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // The mapping being read, if it qualifies so far: (start, end, anonymous seen).
    let mut current: Option<(usize, usize, bool)> = None;
    let flush = |c: Option<(usize, usize, bool)>, out: &mut Vec<(usize, usize)>| {
        if let Some((start, end, false)) = c {
            out.push((start, end));
        }
    };
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Anonymous:") {
            if let Some(c) = current.as_mut() {
                c.2 |= kb.trim().trim_end_matches("kB").trim() != "0";
            }
            continue;
        }
        let mut f = line.splitn(6, ' ');
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        else {
            continue;
        };
        // A new mapping's header line.
        flush(current.take(), &mut out);
        let path = f.nth(3).map(str::trim_start).unwrap_or("");
        if (perms == "r--p" || perms == "r-xp") && path == exe && start < end {
            current = Some((start, end, false));
        }
    }
    flush(current.take(), &mut out);
    out
}

/// The part of the main thread's `[stack]` mapping below `sp - STACK_MARGIN`, page
/// aligned; `None` when nothing is that deep or `sp` is not on that stack.
pub fn dead_stack(maps: &str, sp: usize, page: usize) -> Option<(usize, usize)> {
    let line = maps.lines().find(|l| l.ends_with("[stack]"))?;
    let (a, rest) = line.split_once('-')?;
    let b = rest.split(' ').next()?;
    let start = usize::from_str_radix(a, 16).ok()?;
    let end = usize::from_str_radix(b, 16).ok()?;
    if sp <= start || sp > end || page == 0 {
        return None;
    }
    let limit = sp.checked_sub(STACK_MARGIN)? / page * page;
    (limit > start).then_some((start, limit))
}

/// Give back what the last heavy step left behind: call on the shim's main thread after
/// the container is created and after each exec process is started.
pub fn give_back() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    let Ok(maps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
        for (start, end) in clean_ranges(&maps, &exe.to_string_lossy()) {
            // SAFETY: the range is a private, read-only file mapping of the binary with no
            // copied page (the shim is single-threaded, and nothing writes a read-only
            // mapping), so dropping it only makes the next access read the same bytes from
            // the page cache again.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
    let marker = 0u8;
    let sp = std::ptr::addr_of!(marker) as usize;
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
    if let Some((start, end)) = dead_stack(&maps, sp, page) {
        // SAFETY: the range lies below the current frame by more than STACK_MARGIN on the
        // calling thread's own stack, so it holds no live data; dropped pages read back
        // as zeros when the stack grows into them again.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0000000-55d0c0a00000 r--p 00000000 fe:01 123 /usr/bin/wharf
Rss:                 400 kB
Anonymous:             0 kB
55d0c0a00000-55d0c2000000 r-xp 00a00000 fe:01 123 /usr/bin/wharf
Anonymous:             0 kB
55d0c2000000-55d0c2100000 r--p 02000000 fe:01 123 /usr/bin/wharf
Anonymous:          1024 kB
55d0c2100000-55d0c2110000 rw-p 02100000 fe:01 123 /usr/bin/wharf
Anonymous:             0 kB
55d0c3000000-55d0c3100000 rw-p 00000000 00:00 0 [heap]
Anonymous:             4 kB
7f0000000000-7f0000100000 r-xp 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000300000 r-xp 00000000 fe:01 789 /usr/bin/wharf-old (deleted)
Anonymous:             0 kB
7ffd00000000-7ffd00040000 rw-p 00000000 00:00 0                          [stack]
Anonymous:            80 kB
";

    #[test]
    fn only_the_binarys_clean_read_only_pages_are_dropped() {
        assert_eq!(
            clean_ranges(MAPS, "/usr/bin/wharf"),
            [
                (0x55d0_c000_0000, 0x55d0_c0a0_0000),
                (0x55d0_c0a0_0000, 0x55d0_c200_0000)
            ]
        );
        assert_eq!(
            clean_ranges(MAPS, "/usr/bin/wharf-old (deleted)"),
            [(0x7f00_0020_0000, 0x7f00_0030_0000)]
        );
        assert!(clean_ranges(MAPS, "/usr/bin/other").is_empty());
        assert!(clean_ranges("garbage\n\n-", "/usr/bin/wharf").is_empty());
    }

    #[test]
    fn the_stack_below_the_margin_is_dead() {
        let (start, end) = (0x7ffd_0000_0000usize, 0x7ffd_0004_0000usize);
        // sp near the top: everything from the bottom to sp - 16 KiB (page aligned).
        let sp = end - 0x1234;
        assert_eq!(
            dead_stack(MAPS, sp, 4096),
            Some((start, (sp - STACK_MARGIN) / 4096 * 4096))
        );
        // Too shallow, or not on this stack: nothing.
        assert_eq!(dead_stack(MAPS, start + 0x2000, 4096), None);
        assert_eq!(dead_stack(MAPS, 0x1000, 4096), None);
        assert_eq!(dead_stack("", sp, 4096), None);
    }
}
