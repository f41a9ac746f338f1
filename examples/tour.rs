//! A tour of the engine, end to end: build a small process-like address
//! space, run a deterministic workload taking snapshots, rewind, branch, diff,
//! and round-trip the state through serialization. Prints what it did.
//!
//! Run: `cargo run --release --example tour`

use std::time::Instant;

use vmsnap::{MemoryError, MemoryManager, PAGE_SIZE, Protection, RegionKind};

fn main() -> Result<(), MemoryError> {
    let mut mm = MemoryManager::new();
    println!("vmsnap tour: a Windows-like address space with O(1) snapshots\n");

    // An image-like allocation: headers read-only, code read-execute.
    let image = 0x1_4000_0000;
    mm.allocate_memory_at(image, 0x3000, Protection::READ, false, RegionKind::Image)?;
    mm.write_memory(image, b"MZ")?;
    mm.protect_memory(image + 0x1000, 0x1000, Protection::READ_EXECUTE)?;
    mm.write_memory(image + 0x1000, &[0x48, 0x31, 0xC0, 0xC3])?; // xor rax, rax; ret

    // A 64 MiB heap, reserved, with 16 MiB committed.
    let heap = mm.allocate_memory(64 << 20, Protection::READ_WRITE, true, 0, RegionKind::Private)?;
    mm.commit_memory(heap, 16 << 20, Protection::READ_WRITE)?;

    // A 1 MiB stack: reserved, top 3 pages committed, a guard page below them.
    let stack = mm.allocate_memory(1 << 20, Protection::READ_WRITE, true, 0, RegionKind::Private)?;
    let top = stack + (1 << 20);
    mm.commit_memory(top - 3 * PAGE_SIZE, 3 * PAGE_SIZE, Protection::READ_WRITE)?;
    mm.commit_memory(top - 4 * PAGE_SIZE, PAGE_SIZE, Protection::READ_WRITE | Protection::GUARD)?;

    // A KUSER_SHARED_DATA-like MMIO page whose reads are computed.
    mm.allocate_mmio(
        0x7FFE_0000,
        PAGE_SIZE,
        |offset, buf| buf.iter_mut().enumerate().for_each(|(i, b)| *b = (offset as usize + i) as u8),
        |_, _| {},
    )?;

    println!("address space:");
    let mut address = 0x10000;
    while address < vmsnap::USER_SPACE_END {
        let r = mm.region_info(address);
        if r.is_reserved {
            println!(
                "  {:#014x} {:>10} bytes  {:<9} {:<9} {:?}",
                r.start,
                r.length,
                if r.is_committed { "committed" } else { "reserved" },
                r.permissions.to_string(),
                r.kind
            );
        }
        address = r.start + r.length.max(PAGE_SIZE);
    }

    // The guard page fires once, then lets the stack grow through it.
    let guard = top - 4 * PAGE_SIZE;
    let first = mm.guest_write(guard + 8, &[1; 8]);
    let second = mm.guest_write(guard + 8, &[1; 8]);
    let outcome = |r: Result<(), MemoryError>| r.map_or_else(|e| e.to_string(), |()| "ok".to_owned());
    println!("\nguard page: first touch -> {}; second -> {}", outcome(first), outcome(second));
    let denied = mm.guest_write(image + 0x1000, &[0x90]);
    println!("guest write to code -> {}", outcome(denied));

    // A pagefile-backed section with two views: one set of bytes, two addresses.
    let section = mm.create_section(0x10000, Protection::READ_WRITE, true)?;
    let view_a = mm.map_view_of_section(section, 0, 0, 0, Protection::READ_WRITE)?;
    let view_b = mm.map_view_of_section(section, 0, 0, 0, Protection::READ)?;
    mm.write_memory(view_a + 0x40, b"shared")?;
    let mut shared = [0u8; 6];
    mm.read_memory(view_b + 0x40, &mut shared)?;
    println!(
        "\nsection views at {view_a:#x} and {view_b:#x}: written through one, read through the other: {:?}",
        String::from_utf8_lossy(&shared)
    );

    // The same address space through the Windows system-call face.
    let mbi = vmsnap::nt::nt_query_virtual_memory(&mm, view_b).expect("a mapped view");
    println!(
        "NtQueryVirtualMemory({view_b:#x}): State {:#x} Protect {:#x} Type {:#x} RegionSize {:#x}",
        mbi.state, mbi.protect, mbi.type_, mbi.region_size
    );

    // A deterministic workload: 1,000 steps, a snapshot every 100.
    let mut snapshots = Vec::new();
    let started = Instant::now();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for step in 0..1000u64 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let page = state % (16 << 20) / PAGE_SIZE;
        mm.write_memory(heap + page * PAGE_SIZE + step % 4000, &step.to_le_bytes())?;
        if step % 100 == 99 {
            snapshots.push(mm.snapshot());
        }
    }
    let run_time = started.elapsed();
    println!(
        "\nworkload: 1000 steps, {} snapshots in {:.2?} ({} MiB committed)",
        snapshots.len(),
        run_time,
        mm.compute_memory_stats().committed_memory >> 20
    );

    // Rewind to step 300 and branch.
    let rewind = Instant::now();
    mm.restore(&snapshots[2]);
    let rewind_time = rewind.elapsed();
    mm.write_memory(heap, b"a different future")?;
    let branch = mm.snapshot();
    println!("rewound to step 300 in {rewind_time:.2?} and branched");

    let diff = snapshots[2].diff(&snapshots[9]);
    println!("diff step 300 -> step 1000: {} pages changed", diff.changed_pages().count());
    let diff = snapshots[2].diff(&branch);
    let change = &diff.page_changes()[0];
    println!(
        "diff step 300 -> branch: {} page changed, at {:#x}, bytes {:?}",
        diff.changed_pages().count(),
        change.address(),
        change.byte_ranges()
    );

    // Serialize the whole state and read it back elsewhere.
    let mut buffer = Vec::new();
    mm.serialize_memory_state(&mut buffer, false);
    let mut copy = MemoryManager::new();
    copy.deserialize_memory_state(&buffer, false)?;
    let mut text = [0u8; 18];
    copy.read_memory(heap, &mut text)?;
    println!(
        "serialized state: {} KiB; the copy reads {:?}",
        buffer.len() >> 10,
        String::from_utf8_lossy(&text)
    );
    let stats = mm.compute_memory_stats();
    println!(
        "stats: {} MiB reserved, {} MiB committed, {} allocations, layout version {}",
        stats.reserved_memory >> 20,
        stats.committed_memory >> 20,
        stats.allocation_count,
        mm.layout_version()
    );
    Ok(())
}
