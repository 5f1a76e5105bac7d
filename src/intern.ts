/**
 * The index of `value` in `values`, appending it (and noting its index in `ids`) when new: how
 * a batch stores repeated strings (model and provider names) once and refers to them by index.
 */
export function intern(ids: Map<string, number>, values: string[], value: string): number {
  let id = ids.get(value)
  if (id === undefined) {
    id = values.length
    values.push(value)
    ids.set(value, id)
  }
  return id
}
