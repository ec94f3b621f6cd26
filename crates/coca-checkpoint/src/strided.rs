//! Copy a strided view out of a flat byte storage into row-major order.
//!
//! `torch.save` writes a tensor's whole storage plus its view (offset, size, stride),
//! so a transposed weight saved without `.contiguous()`, a slice, or an expanded
//! tensor arrives as a strided view. candle's own pickle reader only handles C- and
//! Fortran-contiguous views; this handles any view whose elements lie inside the
//! storage. All quantities are in elements unless named `*_bytes`.

use std::borrow::Cow;

/// The placement of a tensor inside its storage, as torch describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StridedLayout {
    /// Size of each dimension.
    pub shape: Vec<usize>,
    /// Distance, in elements, between neighbours along each dimension.
    pub strides: Vec<usize>,
    /// Index of the first element in the storage.
    pub offset: usize,
}

impl StridedLayout {
    /// Number of elements in the view.
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of elements in the view, `None` if that overflows `usize` (only a corrupt file can
    /// make it).
    pub fn elem_count_checked(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// How many storage elements the view needs: one past the furthest element it
    /// touches (0 for an empty view). `None` if that number overflows `usize`, which
    /// only a corrupt file can cause.
    pub fn required_storage_len(&self) -> Option<usize> {
        if self.shape.contains(&0) {
            return Some(0);
        }
        let mut last = self.offset;
        for (&size, &stride) in self.shape.iter().zip(&self.strides) {
            last = last.checked_add((size - 1).checked_mul(stride)?)?;
        }
        last.checked_add(1)
    }

    /// Whether the view is a plain row-major run of elements. Strides of size-1
    /// dimensions are irrelevant (torch leaves arbitrary values there).
    pub fn is_row_major(&self) -> bool {
        let mut expected = 1usize;
        for (&size, &stride) in self.shape.iter().zip(&self.strides).rev() {
            if size != 1 && stride != expected {
                return false;
            }
            expected = expected.saturating_mul(size);
        }
        true
    }

    /// The view's bytes in row-major order: borrowed when already row-major, copied
    /// element by element (run by run where possible) otherwise.
    ///
    /// The caller must have checked `required_storage_len() * elem_size <= storage.len()`.
    pub fn gather<'a>(&self, storage: &'a [u8], elem_size: usize) -> Cow<'a, [u8]> {
        let count = self.elem_count();
        if count == 0 {
            // Nothing to read; the offset of an empty view may point anywhere.
            return Cow::Borrowed(&[]);
        }
        if self.is_row_major() {
            let start = self.offset * elem_size;
            return Cow::Borrowed(&storage[start..start + count * elem_size]);
        }
        let mut out = Vec::with_capacity(count * elem_size);
        // A non-empty, non-row-major view has rank >= 1 (0-d views are row-major)
        // and no zero-sized dimension, so the split below is safe.
        let rank = self.shape.len();
        let (inner_len, inner_stride) = (self.shape[rank - 1], self.strides[rank - 1]);
        let outer_shape = &self.shape[..rank - 1];
        let outer_strides = &self.strides[..rank - 1];
        let mut index = vec![0usize; rank - 1];
        loop {
            let base = self.offset
                + index
                    .iter()
                    .zip(outer_strides)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            if inner_stride == 1 {
                out.extend_from_slice(&storage[base * elem_size..(base + inner_len) * elem_size]);
            } else {
                for j in 0..inner_len {
                    let at = (base + j * inner_stride) * elem_size;
                    out.extend_from_slice(&storage[at..at + elem_size]);
                }
            }
            // Advance the outer multi-index like an odometer; done when it wraps.
            let mut dim = outer_shape.len();
            loop {
                if dim == 0 {
                    return Cow::Owned(out);
                }
                dim -= 1;
                index[dim] += 1;
                if index[dim] < outer_shape[dim] {
                    break;
                }
                index[dim] = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(shape: &[usize], strides: &[usize], offset: usize) -> StridedLayout {
        StridedLayout {
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            offset,
        }
    }

    /// One byte per element so the gathered bytes are the storage indices.
    fn gather_indices(l: &StridedLayout, storage_len: usize) -> Vec<u8> {
        let storage: Vec<u8> = (0..storage_len as u8).collect();
        l.gather(&storage, 1).into_owned()
    }

    #[test]
    fn row_major_views_are_borrowed() {
        let storage: Vec<u8> = (0..24).collect();
        let l = layout(&[2, 3], &[3, 1], 4);
        assert!(l.is_row_major());
        assert!(matches!(l.gather(&storage, 2), Cow::Borrowed(b) if b == &storage[8..20]));
        // Size-1 dims may carry any stride; 0-d is row-major.
        assert!(layout(&[1, 3], &[99, 1], 0).is_row_major());
        assert!(layout(&[], &[], 5).is_row_major());
        assert_eq!(layout(&[], &[], 5).required_storage_len(), Some(6));
    }

    #[test]
    fn transposed_view_is_reordered() {
        // torch: base = arange(12).reshape(3, 4); base.t() has shape (4, 3), stride (1, 4).
        let l = layout(&[4, 3], &[1, 4], 0);
        assert!(!l.is_row_major());
        assert_eq!(
            gather_indices(&l, 12),
            [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
        );
    }

    #[test]
    fn sliced_view_with_offset_and_step() {
        // torch: wide = arange(24).reshape(4, 6); wide[1:, ::2] -> offset 6, stride (6, 2).
        let l = layout(&[3, 3], &[6, 2], 6);
        assert_eq!(l.required_storage_len(), Some(23));
        assert_eq!(gather_indices(&l, 24), [6, 8, 10, 12, 14, 16, 18, 20, 22]);
    }

    #[test]
    fn expanded_view_with_zero_stride() {
        let l = layout(&[2, 3], &[0, 1], 1);
        assert_eq!(l.required_storage_len(), Some(4));
        assert_eq!(gather_indices(&l, 4), [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn multi_byte_elements_keep_their_bytes_together() {
        let storage: Vec<u8> = (0..8).collect();
        let l = layout(&[2, 2], &[1, 2], 0);
        assert_eq!(l.gather(&storage, 2).as_ref(), [0, 1, 4, 5, 2, 3, 6, 7]);
    }

    #[test]
    fn empty_views_need_no_storage() {
        let l = layout(&[0, 3], &[1, 7], 100);
        assert_eq!(l.required_storage_len(), Some(0));
        assert!(l.gather(&[], 4).is_empty());
    }

    #[test]
    fn overflowing_extents_are_reported() {
        let l = layout(&[3, 2], &[usize::MAX / 2, 1], 0);
        assert_eq!(l.required_storage_len(), None);
        let huge = layout(&[1 << 40, 1 << 40], &[0, 0], 0);
        assert_eq!(huge.required_storage_len(), Some(1));
        assert_eq!(huge.elem_count_checked(), None);
        assert_eq!(layout(&[2, 3], &[0, 1], 0).elem_count_checked(), Some(6));
    }
}
