// Prepended to the kernels that walk rows (maxpool_forward, maxpool_backward, shortcut_a_forward,
// shortcut_a_backward): which columns [first, last) of which row an invocation owns. With
// PER_ELEMENT (`Gpu::per_element`, GPUs) invocation i owns one column, i % columns of row
// i / columns, so that neighbouring invocations touch neighbouring addresses; without it (CPU
// adapters, which run integer divisions one lane at a time) it owns all of row i, and the kernel
// pays its divisions once a row.

override PER_ELEMENT: bool = false;

struct RowSpan { row: u32, first: u32, last: u32 }

fn row_span(i: u32, columns: u32) -> RowSpan {
    if (PER_ELEMENT) {
        let first = i % columns;
        return RowSpan(i / columns, first, first + 1u);
    }
    return RowSpan(i, 0u, columns);
}
